// tessera dump and tessera load: a volume's metadata to a JSON file and back
// (meta/meta_dump.h does both; this file handles files, standard streams,
// and starting a dump over).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <streambuf>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "meta/meta_dump.h"

namespace tessera {
namespace {

constexpr const char* kDumpHelp = R"(Usage: tessera dump META-URL [FILE]

Write the whole metadata of a volume as JSON to FILE, or to standard output
when FILE is absent or "-": its settings, counters, every inode with its
attributes, directory entries, chunks (slice records), symlink target,
trash origin and extended attributes, slice reference counts, slices
waiting for deletion and files waiting to be deleted. Any other key is
written raw (hex key, base64 value), so nothing is lost. File data stays in
the bucket: the dump and the bucket together are the volume. `tessera load`
writes a dump into an empty metadata engine of any type.

The volume is read in one read transaction, so the dump is one consistent
snapshot even while the volume is mounted. Redis keeps a snapshot only for
a bounded number of commits (2000): when a busy volume goes past that, the
dump starts over, up to 3 times, then fails; dump such a volume while it is
idle. Starting over rewinds FILE, or standard output when it is a regular
file; a pipe can be rewound only while nothing has been written to it.

Live session state is left out: client sessions and the locks they hold.
Files a session holds open after their last unlink are written as pending
deletions, so the loaded volume deletes them.

The dump holds the volume's secrets (S3 keys, the encryption key): FILE is
created with mode 0600, by a rename once it is complete.

Exit status: 0 when the dump is written, 1 when it failed, 2 for bad usage.
)";

constexpr const char* kLoadHelp = R"(Usage: tessera load [--batch N] [--skip-check] META-URL FILE

Write the volume in FILE (made by `tessera dump`; "-" reads standard input)
into the metadata engine at META-URL, which must be empty: a new SQLite
file, an empty Redis database or prefix, an empty PostgreSQL database or
etcd prefix. The engine may be of another type than the dumped one. Mount
the loaded volume with the same bucket.

FILE is read through once to check it before anything is written (standard
input and pipes are read once only). Keys are then written in transactions
of at most N keys (and 1 MiB); the settings go in the last one, so a load
that fails halfway leaves a volume no client mounts: empty the engine
before loading again.

Options:
  --batch N       keys per transaction (default 1000; etcd accepts at most
                  its --max-txn-ops, 128 unless raised)
  --skip-check    do not read FILE through before loading it

Exit status: 0 when the volume is loaded, 1 when the target is not empty,
FILE is not a valid dump (the message names the line and the record) or
the load failed, 2 for bad usage.
)";

int Usage(const char* command, const std::string& message) {
  Fail(command, message);
  return 2;
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Output to a file descriptor that a dump can take back when it starts
// over: a regular file is cut back to where the dump began; anything else
// (a pipe) only while nothing has left the buffer.
class RewindableOut final : public std::streambuf {
 public:
  explicit RewindableOut(int fd) : fd_(fd), buf_(1 << 20) {
    setp(buf_.data(), buf_.data() + buf_.size());
    struct stat st;
    start_ = lseek(fd_, 0, SEEK_CUR);
    seekable_ = start_ >= 0 && fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
    // Appending (>>): writes go to the end, wherever the offset is.
    const int flags = fcntl(fd_, F_GETFL);
    if (seekable_ && flags >= 0 && (flags & O_APPEND)) start_ = st.st_size;
  }

  // Drops what was written since the start.
  Status Rewind() {
    setp(buf_.data(), buf_.data() + buf_.size());
    if (written_ == 0) return Status::Ok();
    if (!seekable_) {
      return Invalid("part of the dump went out on a stream that cannot be rewound; "
                     "dump to a FILE instead");
    }
    if (ftruncate(fd_, start_) != 0 || lseek(fd_, start_, SEEK_SET) < 0) {
      return FromErrno(errno, "rewinding the output");
    }
    written_ = 0;
    return Status::Ok();
  }
  // The error that stopped a write, if any.
  Status status() const {
    return error_ == 0 ? Status::Ok() : FromErrno(error_, "writing the dump");
  }

 protected:
  int_type overflow(int_type c) override {
    if (!Drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return Drain() ? 0 : -1; }

 private:
  bool Drain() {
    const char* p = pbase();
    while (p < pptr()) {
      const ssize_t n = write(fd_, p, static_cast<size_t>(pptr() - p));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error_ = n < 0 ? errno : EIO;
        return false;
      }
      p += n;
      written_ += static_cast<uint64_t>(n);
    }
    setp(buf_.data(), buf_.data() + buf_.size());
    return true;
  }

  int fd_;
  std::vector<char> buf_;
  off_t start_ = 0;
  bool seekable_ = false;
  uint64_t written_ = 0;
  int error_ = 0;
};

}  // namespace

int RunDump(int argc, char** argv) {
  Args args;
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Usage("dump", st.message());
  if (args.help()) {
    std::fputs(kDumpHelp, stdout);
    return 0;
  }
  const auto& pos = args.positional();
  if (pos.empty() || pos.size() > 2) return Usage("dump", "expected META-URL [FILE] (see --help)");
  const std::string file = pos.size() == 2 ? pos[1] : "-";
  const bool to_stdout = file == "-";

  auto kv = OpenKv(pos[0]);
  if (!kv.ok()) return Fail("dump", kv.status());

  // A file is written under a temporary name next to it and renamed when
  // complete: an earlier dump there stays whole until then.
  int fd = STDOUT_FILENO;
  std::string temp;
  if (!to_stdout) {
    temp = file + ".tmp-XXXXXX";
    fd = mkstemp(temp.data());  // mode 0600
    if (fd < 0) return Fail("dump", FromErrno(errno, "creating " + file));
  }
  auto discard = [&](const Status& st) {
    if (!to_stdout) {
      close(fd);
      unlink(temp.c_str());
    }
    return Fail("dump", st);
  };

  const auto start = std::chrono::steady_clock::now();
  RewindableOut buf(fd);
  std::ostream out(&buf);
  DumpOptions options;
  options.restart = [&] {
    out.clear();
    return buf.Rewind();
  };
  DumpStats stats;
  Status st = DumpVolume(**kv, out, options, &stats);
  out.flush();
  if (!buf.status().ok()) st = buf.status();
  if (!st.ok()) return discard(st);
  if (to_stdout) return 0;
  if (fsync(fd) != 0) return discard(FromErrno(errno, "writing " + file));
  close(fd);
  if (rename(temp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    unlink(temp.c_str());
    return Fail("dump", FromErrno(err, "renaming the dump to " + file));
  }
  std::string detail = std::to_string(stats.keys) + " keys";
  if (stats.raw > 0) detail += ", " + std::to_string(stats.raw) + " of them raw";
  if (stats.attempts > 1) {
    detail += ", started over " + std::to_string(stats.attempts - 1) + " times";
  }
  std::printf("dumped %llu inodes (%s) to %s in %.1f s\n",
              static_cast<unsigned long long>(stats.inodes), detail.c_str(), file.c_str(),
              Since(start));
  return 0;
}

int RunLoad(int argc, char** argv) {
  Args args;
  args.Value("batch");
  args.Flag("skip-check");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Usage("load", st.message());
  if (args.help()) {
    std::fputs(kLoadHelp, stdout);
    return 0;
  }
  const auto& pos = args.positional();
  if (pos.size() != 2) return Usage("load", "expected META-URL FILE (see --help)");
  auto batch = args.GetCount("batch", 1000, 1, 1'000'000);
  if (!batch.ok()) return Usage("load", batch.status().message());
  const std::string& file = pos[1];

  std::ifstream stream;
  std::istream* in = &std::cin;
  // Only a regular file can be read twice (not standard input, not a pipe
  // such as <(zstd -dc vol.json.zst)).
  bool rereadable = false;
  if (file != "-") {
    stream.open(file, std::ios::binary);
    if (!stream) return Fail("load", FromErrno(errno, "opening " + file));
    in = &stream;
    struct stat st;
    rereadable = stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }
  // A target that does not exist yet (a new SQLite file) is empty; it is
  // made only once the dump checked out.
  auto kv = OpenKv(pos[0]);
  const bool absent = !kv.ok() && kv.status().Is(StatusCode::kNotFound);
  if (!kv.ok() && !absent) return Fail("load", kv.status());
  if (!absent) {
    if (Status st = CheckLoadTarget(**kv); !st.ok()) return Fail("load", st);
  }

  const auto start = std::chrono::steady_clock::now();
  // A file is checked whole first, so that a bad one changes nothing.
  if (rereadable && !args.Has("skip-check")) {
    if (Status st = CheckDump(*in); !st.ok()) return Fail("load", st.WithContext(file));
    in->clear();
    in->seekg(0);
    if (!*in) return Fail("load", IoError("cannot read " + file + " a second time"));
  }
  if (absent) {
    kv = OpenKv(pos[0], KvOptions{.create_if_missing = true});
    if (!kv.ok()) return Fail("load", kv.status());
  }
  LoadOptions options;
  options.batch_keys = *batch;
  LoadStats stats;
  if (Status st = LoadVolume(**kv, *in, options, &stats); !st.ok()) {
    return Fail("load", file == "-" ? st : st.WithContext(file));
  }
  // The name, for the report only: a volume with odd settings loads too.
  auto settings = Meta::LoadSettings(**kv);
  const std::string what = settings.ok() ? "volume '" + settings->name + "': " : "";
  std::printf("loaded %s%llu inodes (%llu keys) into %s in %llu transactions, %.1f s\n",
              what.c_str(), static_cast<unsigned long long>(stats.inodes),
              static_cast<unsigned long long>(stats.keys), (*kv)->Url().c_str(),
              static_cast<unsigned long long>(stats.transactions), Since(start));
  return 0;
}

}  // namespace tessera
