// tessera bench: a fixed benchmark of any directory with plain POSIX calls
// (big file write and read, small files write, read and stat), so that the
// same command gives comparable figures on a Tessera mount, a local disk or
// tmpfs.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mounted_path.h"
#include "common/units.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera bench [OPTIONS] PATH

Benchmark the file system holding the directory PATH (a Tessera mount or any
other) with plain POSIX calls from this one process, in a new temporary
directory under PATH that is removed at the end (also on error or Ctrl-C):

  write big file     each worker writes its own file of --big-file-size in
                     1 MiB write() calls, fsync()s and closes it
  read big file      each worker reads its file back in 1 MiB read() calls
  write small files  --small-files files of --small-file-size, each created,
                     written and closed (no fsync), shared among the workers
  read small files   each small file opened, read whole and closed
  stat small files   stat() of each small file

Reads first drop the file's pages from this machine's page cache
(posix_fadvise DONTNEED); caches below the file system (a Tessera mount's
block cache, a disk's own cache) may still serve them.

For each phase it prints the wall time, the throughput (MiB/s for the big
file, files/s for small files) and ms/op: the time each worker spent in the
phase divided by the operations it did (an operation is one 1 MiB request of
the big file, one whole file for small files).

Options:
  --big-file-size SIZE    size of each big file (default 1G; 0 skips)
  --small-files N         number of small files (default 100; 0 skips)
  --small-file-size SIZE  size of each small file (default 128K)
  --threads N             workers, each on its own files (default 1)
SIZE: bytes, or with a unit: 128K, 4M, 1G.
)";

constexpr uint64_t kRequest = 1 << 20;  // one read/write call on the big file
// Written data cycles through this much random data: more than any block
// (16 MiB at most), so a compressing store cannot shrink the blocks.
constexpr uint64_t kPatternBytes = 32 << 20;

std::atomic<bool> g_interrupted{false};

void OnSignal(int) { g_interrupted.store(true); }

struct Config {
  std::string dir;  // PATH
  uint64_t big_file_size = 1ull << 30;
  uint64_t small_files = 100;
  uint64_t small_file_size = 128 << 10;
  unsigned threads = 1;
};

// What one phase measured.
struct Phase {
  Phase(std::string n, bool files_per_s) : name(std::move(n)), per_file(files_per_s) {}
  std::string name;
  bool per_file = false;     // throughput in files/s rather than MiB/s
  double seconds = 0;        // wall time of the whole phase
  double busy_seconds = 0;   // sum over workers of their time in it
  uint64_t ops = 0;          // 1 MiB requests or files
  uint64_t bytes = 0;
  uint64_t files = 0;
};

double Now() { return static_cast<double>(MonoNanos()) / 1e9; }

Status Errno(const std::string& what, const std::string& path) {
  return FromErrno(errno, what + " " + path);
}

Status CheckInterrupted() {
  if (g_interrupted.load()) return Status(StatusCode::kUnavailable, "interrupted");
  return Status::Ok();
}

// The files of one run: the temporary directory and the names in it.
class Workspace {
 public:
  Workspace(std::string root, const Config& cfg) : root_(std::move(root)), cfg_(cfg) {}

  const std::string& root() const { return root_; }
  std::string Big(unsigned worker) const { return root_ + "/big." + std::to_string(worker); }
  std::string Small(uint64_t i) const { return root_ + "/small." + std::to_string(i); }

  // Removes everything a run may have created; the first failure, if any.
  Status Remove() const {
    Status first;
    auto remove = [&](const std::string& path) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT && first.ok()) {
        first = Errno("remove", path);
      }
    };
    for (unsigned w = 0; w < cfg_.threads; ++w) remove(Big(w));
    for (uint64_t i = 0; i < cfg_.small_files; ++i) remove(Small(i));
    if (::rmdir(root_.c_str()) != 0 && first.ok()) first = Errno("remove", root_);
    return first;
  }

 private:
  const std::string root_;
  const Config& cfg_;
};

Status WriteAll(int fd, const char* data, uint64_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Errno("write", path);
    data += w;
    n -= static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

// Writes `size` bytes to a new file in requests of at most kRequest bytes,
// request k taking piece (first_piece + k) of the pattern; counts the
// requests in *ops.
Status WriteFile(const std::string& path, uint64_t size, const std::string& pattern,
                 uint64_t first_piece, bool sync, uint64_t* ops) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", path);
  Status st;
  for (uint64_t done = 0, k = 0; done < size && st.ok(); ++k) {
    st = CheckInterrupted();
    if (!st.ok()) break;
    const uint64_t n = std::min<uint64_t>(kRequest, size - done);
    const uint64_t piece = (first_piece + k) % (kPatternBytes / kRequest);
    st = WriteAll(fd, pattern.data() + piece * kRequest, n, path);
    done += n;
    ++*ops;
  }
  if (st.ok() && sync && ::fsync(fd) != 0) st = Errno("fsync", path);
  if (::close(fd) != 0 && st.ok()) st = Errno("close", path);
  return st;
}

// Reads a whole file (expected to hold `size` bytes) in kRequest requests.
Status ReadFile(const std::string& path, uint64_t size, std::string* buf, uint64_t* ops) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  // Drop what the writes left in this machine's page cache, so the reads
  // reach the file system.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  Status st;
  uint64_t total = 0;
  for (;;) {
    st = CheckInterrupted();
    if (!st.ok()) break;
    ssize_t n = ::read(fd, buf->data(), buf->size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = Errno("read", path);
      break;
    }
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    ++*ops;
  }
  ::close(fd);
  if (st.ok() && total != size) {
    st = IoError("read " + std::to_string(total) + " bytes of " + path + ", expected " +
                 std::to_string(size));
  }
  return st;
}

// Runs `work(worker, &ops)` on cfg.threads threads and measures the phase.
// The first error of any worker stops the others at their next operation.
Status RunPhase(const Config& cfg, Phase* phase,
                const std::function<Status(unsigned, uint64_t*)>& work) {
  std::mutex mu;
  Status first;  // guarded by mu
  std::vector<uint64_t> ops(cfg.threads, 0);
  std::vector<double> busy(cfg.threads, 0);
  const double start = Now();
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < cfg.threads; ++w) {
    workers.emplace_back([&, w] {
      const double t0 = Now();
      Status st = work(w, &ops[w]);
      busy[w] = Now() - t0;
      if (!st.ok()) {
        std::lock_guard lock(mu);
        if (first.ok()) first = st;
        g_interrupted.store(true);  // stops the other workers
      }
    });
  }
  for (auto& t : workers) t.join();
  phase->seconds = Now() - start;
  for (unsigned w = 0; w < cfg.threads; ++w) {
    phase->ops += ops[w];
    phase->busy_seconds += busy[w];
  }
  return first.WithContext(phase->name);
}

Status RunAll(const Config& cfg, const Workspace& ws, std::vector<Phase>* phases) {
  // The same bytes every run: figures do not depend on the data drawn.
  std::string pattern(kPatternBytes, '\0');
  std::mt19937_64 rng(20240611);
  for (size_t i = 0; i + 8 <= pattern.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(&pattern[i], &v, 8);
  }
  const uint64_t big = cfg.big_file_size;
  const uint64_t small = cfg.small_file_size;
  // Worker w handles the small files w, w + threads, w + 2 * threads, ...
  auto each_small = [&](unsigned w, const std::function<Status(uint64_t)>& fn) -> Status {
    for (uint64_t i = w; i < cfg.small_files; i += cfg.threads) {
      RETURN_IF_ERROR(CheckInterrupted());
      RETURN_IF_ERROR(fn(i));
    }
    return Status::Ok();
  };

  if (big > 0) {
    Phase write("write big file", false);
    write.bytes = big * cfg.threads;
    write.files = cfg.threads;
    RETURN_IF_ERROR(RunPhase(cfg, &write, [&](unsigned w, uint64_t* ops) {
      return WriteFile(ws.Big(w), big, pattern, w, /*sync=*/true, ops);
    }));
    phases->push_back(write);

    Phase read("read big file", false);
    read.bytes = write.bytes;
    read.files = cfg.threads;
    RETURN_IF_ERROR(RunPhase(cfg, &read, [&](unsigned w, uint64_t* ops) {
      std::string buf(kRequest, '\0');
      return ReadFile(ws.Big(w), big, &buf, ops);
    }));
    phases->push_back(read);
  }
  if (cfg.small_files > 0) {
    Phase write("write small files", true);
    write.bytes = small * cfg.small_files;
    write.files = cfg.small_files;
    RETURN_IF_ERROR(RunPhase(cfg, &write, [&](unsigned w, uint64_t* ops) {
      return each_small(w, [&](uint64_t i) {
        uint64_t requests = 0;
        RETURN_IF_ERROR(WriteFile(ws.Small(i), small, pattern, i, /*sync=*/false, &requests));
        ++*ops;
        return Status::Ok();
      });
    }));
    phases->push_back(write);

    Phase read("read small files", true);
    read.bytes = write.bytes;
    read.files = cfg.small_files;
    RETURN_IF_ERROR(RunPhase(cfg, &read, [&](unsigned w, uint64_t* ops) {
      std::string buf(std::min<uint64_t>(kRequest, std::max<uint64_t>(small, 1)), '\0');
      return each_small(w, [&](uint64_t i) {
        uint64_t requests = 0;
        RETURN_IF_ERROR(ReadFile(ws.Small(i), small, &buf, &requests));
        ++*ops;
        return Status::Ok();
      });
    }));
    phases->push_back(read);

    Phase stat("stat small files", true);
    stat.files = cfg.small_files;
    RETURN_IF_ERROR(RunPhase(cfg, &stat, [&](unsigned w, uint64_t* ops) {
      return each_small(w, [&](uint64_t i) {
        struct stat st;
        const std::string path = ws.Small(i);
        if (::stat(path.c_str(), &st) != 0) return Errno("stat", path);
        if (static_cast<uint64_t>(st.st_size) != small) {
          return IoError("stat " + path + ": size " + std::to_string(st.st_size) +
                         ", expected " + std::to_string(small));
        }
        ++*ops;
        return Status::Ok();
      });
    }));
    phases->push_back(stat);
  }
  return Status::Ok();
}

std::string FileSystemOf(const std::string& real_dir) {
  auto mount = InnermostMount(ReadMountInfo(), real_dir);
  if (!mount) return "unknown file system";
  return mount->fs_type + " mounted at " + mount->mount_point;
}

void PrintHeader(const Config& cfg, const std::string& real_dir, int argc, char** argv) {
  PrintBenchmarkTitle("bench", argc, argv);
  std::printf("directory:   %s (%s)\n", real_dir.c_str(), FileSystemOf(real_dir).c_str());
  std::printf("threads:     %u\n", cfg.threads);
  std::printf("big file:    %s per worker, 1 MiB requests, fsync before close\n",
              FormatBytes(cfg.big_file_size).c_str());
  std::printf("small files: %llu of %s, closed without fsync\n\n",
              static_cast<unsigned long long>(cfg.small_files),
              FormatBytes(cfg.small_file_size).c_str());
}

void PrintTable(const std::vector<Phase>& phases) {
  std::printf("%-18s %10s %10s %16s %10s\n", "phase", "ops", "time (s)", "throughput", "ms/op");
  for (const Phase& p : phases) {
    const double secs = p.seconds > 0 ? p.seconds : 1e-9;
    char throughput[32];
    if (p.per_file) {
      std::snprintf(throughput, sizeof(throughput), "%.1f files/s",
                    static_cast<double>(p.files) / secs);
    } else {
      std::snprintf(throughput, sizeof(throughput), "%.1f MiB/s",
                    static_cast<double>(p.bytes) / (1 << 20) / secs);
    }
    const double ms_per_op = p.ops > 0 ? p.busy_seconds * 1000 / static_cast<double>(p.ops) : 0;
    std::printf("%-18s %10llu %10.3f %16s %10.3f\n", p.name.c_str(),
                static_cast<unsigned long long>(p.ops), p.seconds, throughput, ms_per_op);
  }
  if (phases.empty()) std::printf("(every phase skipped)\n");
  std::printf("\nReads may be served from caches below the file system (the page cache of\n"
              "the file is dropped first; a mount's block cache or a disk's is not).\n");
}

}  // namespace

int RunBench(int argc, char** argv) {
  Args args;
  for (const char* v : {"big-file-size", "small-files", "small-file-size", "threads"}) {
    args.Value(v);
  }
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("bench", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) return Fail("bench", "expected one PATH (see --help)");
  Config cfg;
  cfg.dir = args.positional()[0];
  auto big = args.GetSize("big-file-size", cfg.big_file_size, 0, 1ull << 40);
  if (!big.ok()) return Fail("bench", big.status());
  auto small_size = args.GetSize("small-file-size", cfg.small_file_size, 0, 1ull << 30);
  if (!small_size.ok()) return Fail("bench", small_size.status());
  auto small_files = args.GetCount("small-files", cfg.small_files, 0, 100'000'000);
  if (!small_files.ok()) return Fail("bench", small_files.status());
  auto threads = args.GetCount("threads", cfg.threads, 1, 256);
  if (!threads.ok()) return Fail("bench", threads.status());
  cfg.big_file_size = *big;
  cfg.small_file_size = *small_size;
  cfg.small_files = *small_files;
  cfg.threads = static_cast<unsigned>(*threads);

  struct stat st;
  if (::stat(cfg.dir.c_str(), &st) != 0) {
    return Fail("bench", cfg.dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return Fail("bench", cfg.dir + " is not a directory");
  char* real = ::realpath(cfg.dir.c_str(), nullptr);
  if (real == nullptr) return Fail("bench", cfg.dir + ": " + std::strerror(errno));
  const std::string real_dir = real;
  std::free(real);

  std::string tmpl = (real_dir == "/" ? "" : real_dir) + "/tessera-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Fail("bench", "cannot create a directory in " + real_dir + ": " + std::strerror(errno));
  }
  const Workspace ws(tmpl, cfg);

  // Ctrl-C stops the workers at their next operation, then the files go.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  struct sigaction old_int, old_term;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  PrintHeader(cfg, real_dir, argc, argv);
  std::fflush(stdout);
  std::vector<Phase> phases;
  Status run = RunAll(cfg, ws, &phases);
  Status removed = ws.Remove();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (!run.ok()) {
    if (!removed.ok()) Fail("bench", "cleanup: " + removed.ToString());
    return Fail("bench", run);
  }
  if (!removed.ok()) return Fail("bench", "cannot remove what it created: " + removed.ToString());
  PrintTable(phases);
  return 0;
}

}  // namespace tessera
