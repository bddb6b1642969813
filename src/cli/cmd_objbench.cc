// tessera objbench: measures an object store directly (PUT, GET, HEAD,
// LIST, DELETE of small and big objects from a few workers), through the
// same layers a volume uses, so that a slow mount can be told apart from a
// slow store, and the cost of compression and encryption seen on its own.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/volume_store.h"
#include "common/random.h"
#include "common/thread_pool.h"
#include "common/units.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "object/compress_store.h"
#include "object/object_store.h"

namespace tessera {
namespace {

constexpr const char* kHelp =
    R"(Usage: tessera objbench [OPTIONS] (--storage TYPE --bucket BUCKET | META-URL)

Benchmark an object store directly, without a mount: either a bucket given
by --storage and --bucket, or the store of the volume whose metadata lives
in META-URL (with the volume's compression and encryption; a protected RSA
key's passphrase comes from TESSERA_RSA_PASSPHRASE). Objects are written
under a new prefix (objbench-<random>/, inside the volume's name for a
volume) and every object under it is deleted at the end, also on error or
Ctrl-C.

For small objects, then for big ones, --threads workers run one phase
after the other, each on its share of the objects:
  put     store each object (data drawn once, before timing)
  get     read each object whole, checking every byte
  head    the size of each object
  list    each worker lists all objects of the size, 1000 per request
  delete  remove each object
For each phase it prints the objects, the wall time, objects/s, MiB/s (put
and get) and the average and 99th-percentile latency of one request.

Options:
  --storage TYPE        object storage type: file or s3
  --bucket BUCKET       the bucket: for file an existing directory, for s3
                        its URL (http[s]://HOST[:PORT]/BUCKET, as in format)
  --access-key KEY, --secret-key KEY, --session-token T, --region REGION,
  --skip-tls-verify     with --storage s3, as in format (keys default to
                        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)
  --compress ALGO       with --storage: compress objects (lz4, zstd, none)
  --encrypt-rsa-key PEM with --storage: encrypt objects with a data key
                        wrapped by this RSA key, as a volume would
  --threads N           workers (default 4)
  --small-objects N     number of small objects (default 1000; 0 skips)
  --small-size SIZE     size of a small object (default 128K)
  --big-objects N       number of big objects (default 64; 0 skips)
  --big-size SIZE       size of a big object (default 4M)
  --fill KIND           object data: random (default; does not compress) or
                        text (compresses several times)
SIZE: bytes, or with a unit: 128K, 4M.
)";

std::atomic<bool> g_interrupted{false};

void OnSignal(int) { g_interrupted.store(true); }

struct Config {
  unsigned threads = 4;
  uint64_t small_objects = 1000;
  uint64_t small_size = 128 << 10;
  uint64_t big_objects = 64;
  uint64_t big_size = 4 << 20;
  bool text = false;
};

// What one phase measured.
struct Row {
  std::string op;
  uint64_t size = 0;        // of each object
  bool moves_data = false;  // put/get: MiB/s applies
  uint64_t objects = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  std::vector<int64_t> latency_ns;  // one per request
};

struct WorkerStats {
  uint64_t objects = 0;
  uint64_t bytes = 0;
  std::vector<int64_t> latency_ns;
};

// The benchmark's objects: keys under one prefix, data cut from one buffer.
class Objects {
 public:
  Objects(std::string prefix, const Config& cfg) : prefix_(std::move(prefix)) {
    const size_t n = std::max(cfg.small_size, cfg.big_size) + kSpread;
    if (cfg.text) {
      for (size_t i = 0; pattern_.size() < n; ++i) {
        pattern_ += "line " + std::to_string(i) + ": sensor " + std::to_string(i % 17) + " reads " +
                    std::to_string((i * 7919) % 1000) + " at t=" + std::to_string(i * 20) +
                    "ms, status ok\n";
      }
    } else {
      pattern_.resize(n + 8);
      std::mt19937_64 rng(RandomU64());
      for (size_t i = 0; i < n; i += 8) {
        const uint64_t v = rng();
        std::memcpy(&pattern_[i], &v, 8);
      }
    }
  }

  const std::string& prefix() const { return prefix_; }
  std::string Dir(const std::string& kind) const { return prefix_ + kind + "/"; }
  std::string Key(const std::string& kind, uint64_t i) const {
    char name[32];
    std::snprintf(name, sizeof(name), "%08llu", static_cast<unsigned long long>(i));
    return Dir(kind) + name;
  }
  // Object i's data: each object starts elsewhere in the buffer.
  std::string_view Data(uint64_t i, uint64_t size) const {
    return std::string_view(pattern_).substr((i * 4099) % kSpread, size);
  }

 private:
  static constexpr size_t kSpread = 1 << 20;
  const std::string prefix_;
  std::string pattern_;
};

Status CheckInterrupted() {
  if (g_interrupted.load()) return Status(StatusCode::kUnavailable, "interrupted");
  return Status::Ok();
}

// Runs op() and records how long it took.
Status Timed(WorkerStats* stats, const std::function<Status()>& op) {
  const int64_t t0 = MonoNanos();
  Status st = op();
  stats->latency_ns.push_back(MonoNanos() - t0);
  return st;
}

// Runs work(worker, stats) on `threads` threads. The first error stops the
// other workers at their next request.
Status RunPhase(unsigned threads, Row* row,
                const std::function<Status(unsigned, WorkerStats*)>& work) {
  std::vector<WorkerStats> stats(threads);
  const int64_t start = MonoNanos();
  Status first = RunOnThreads(
      threads, [&](unsigned w) { return work(w, &stats[w]); }, [] { g_interrupted.store(true); });
  row->seconds = static_cast<double>(MonoNanos() - start) / 1e9;
  for (WorkerStats& s : stats) {
    row->objects += s.objects;
    row->bytes += s.bytes;
    row->latency_ns.insert(row->latency_ns.end(), s.latency_ns.begin(), s.latency_ns.end());
  }
  return first.WithContext(row->op + " of " + FormatBytes(row->size) + " objects");
}

// The five phases over `count` objects of `size` bytes under Dir(kind).
Status RunSize(ObjectStore& store, const Objects& objs, const Config& cfg, const std::string& kind,
               uint64_t count, uint64_t size, std::vector<Row>* rows) {
  // Worker w handles objects w, w + threads, w + 2 * threads, ...
  auto each = [&](unsigned w, const std::function<Status(uint64_t)>& fn) -> Status {
    for (uint64_t i = w; i < count; i += cfg.threads) {
      RETURN_IF_ERROR(CheckInterrupted());
      RETURN_IF_ERROR(fn(i));
    }
    return Status::Ok();
  };
  auto phase = [&](const std::string& op, bool moves_data,
                   const std::function<Status(unsigned, WorkerStats*)>& work) -> Status {
    Row row;
    row.op = op;
    row.size = size;
    row.moves_data = moves_data;
    Status st = RunPhase(cfg.threads, &row, work);
    rows->push_back(std::move(row));
    return st;
  };

  RETURN_IF_ERROR(phase("put", true, [&](unsigned w, WorkerStats* s) {
    return each(w, [&](uint64_t i) {
      RETURN_IF_ERROR(Timed(s, [&] { return store.Put(objs.Key(kind, i), objs.Data(i, size)); }));
      s->objects++;
      s->bytes += size;
      return Status::Ok();
    });
  }));
  RETURN_IF_ERROR(phase("get", true, [&](unsigned w, WorkerStats* s) {
    return each(w, [&](uint64_t i) {
      const std::string key = objs.Key(kind, i);
      Result<std::string> got = Status(StatusCode::kInternal, "not run");
      RETURN_IF_ERROR(Timed(s, [&] {
        got = store.Get(key);
        return got.status();
      }));
      if (*got != objs.Data(i, size)) {
        return Corrupt("object " + key + " read back differs from what was written (" +
                       std::to_string(got->size()) + " bytes)");
      }
      s->objects++;
      s->bytes += size;
      return Status::Ok();
    });
  }));
  RETURN_IF_ERROR(phase("head", false, [&](unsigned w, WorkerStats* s) {
    return each(w, [&](uint64_t i) {
      const std::string key = objs.Key(kind, i);
      Result<ObjectInfo> info = Status(StatusCode::kInternal, "not run");
      RETURN_IF_ERROR(Timed(s, [&] {
        info = store.Head(key);
        return info.status();
      }));
      if (info->size != size) {
        return Corrupt("HEAD of " + key + " says " + std::to_string(info->size) + " bytes, not " +
                       std::to_string(size));
      }
      s->objects++;
      return Status::Ok();
    });
  }));
  RETURN_IF_ERROR(phase("list", false, [&](unsigned, WorkerStats* s) {
    std::string after;
    uint64_t listed = 0;
    for (bool more = true; more;) {
      RETURN_IF_ERROR(CheckInterrupted());
      Result<ListPage> page = Status(StatusCode::kInternal, "not run");
      RETURN_IF_ERROR(Timed(s, [&] {
        page = store.List(objs.Dir(kind), after, 1000);
        return page.status();
      }));
      listed += page->objects.size();
      more = page->more && !page->objects.empty();
      if (more) after = page->objects.back().key;
    }
    s->objects += listed;
    if (listed != count) {
      return IoError("listing " + objs.Dir(kind) + " found " + std::to_string(listed) +
                     " objects, not " + std::to_string(count));
    }
    return Status::Ok();
  }));
  return phase("delete", false, [&](unsigned w, WorkerStats* s) {
    return each(w, [&](uint64_t i) {
      RETURN_IF_ERROR(Timed(s, [&] { return store.Delete(objs.Key(kind, i)); }));
      s->objects++;
      return Status::Ok();
    });
  });
}

// Deletes every object under the prefix; how many there were.
Result<uint64_t> Cleanup(ObjectStore& store, const std::string& prefix) {
  uint64_t removed = 0;
  std::string after;
  for (bool more = true; more;) {
    ASSIGN_OR_RETURN(ListPage page, store.List(prefix, after, 1000));
    for (const ObjectInfo& o : page.objects) {
      RETURN_IF_ERROR(store.Delete(o.key));
      ++removed;
    }
    more = page.more && !page.objects.empty();
    if (more) after = page.objects.back().key;
  }
  return removed;
}

double Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, v.size());
  return static_cast<double>(v[rank - 1]);
}

void PrintTable(const std::vector<Row>& rows) {
  std::printf("%-9s %9s %9s %9s %11s %9s %9s %9s\n", "operation", "size", "objects", "time (s)",
              "objects/s", "MiB/s", "avg ms", "p99 ms");
  for (const Row& r : rows) {
    const double secs = r.seconds > 0 ? r.seconds : 1e-9;
    char mib[32] = "-";
    if (r.moves_data) {
      std::snprintf(mib, sizeof(mib), "%.1f", static_cast<double>(r.bytes) / (1 << 20) / secs);
    }
    double avg = 0;
    for (int64_t ns : r.latency_ns) avg += static_cast<double>(ns);
    if (!r.latency_ns.empty()) avg /= static_cast<double>(r.latency_ns.size());
    std::printf("%-9s %9s %9llu %9.3f %11.1f %9s %9.3f %9.3f\n", r.op.c_str(),
                FormatBytes(r.size).c_str(), static_cast<unsigned long long>(r.objects), r.seconds,
                static_cast<double>(r.objects) / secs, mib, avg / 1e6,
                Percentile(r.latency_ns, 0.99) / 1e6);
  }
  std::printf(
      "\nLatency is per request (list: per page of up to 1000 keys; each worker\n"
      "lists every object of the size, so objects counts them once per worker).\n");
}

// What is being measured: the store and the header lines that describe it.
struct Target {
  std::unique_ptr<ObjectStore> store;
  std::string prefix;       // where the objects go
  VolumeSettings settings;  // storage, bucket, transforms
  std::string volume;       // "name (META-URL)" for a volume
};

Result<Target> OpenTarget(const Args& args) {
  Target t;
  const bool by_storage = args.Has("storage") || args.Has("bucket");
  if (by_storage == !args.positional().empty()) {
    return Invalid("expected either --storage TYPE --bucket BUCKET or a META-URL (see --help)");
  }
  if (args.positional().size() > 1) return Invalid("expected one META-URL (see --help)");
  const std::string run = "objbench-" + RandomHex16() + "/";
  if (!by_storage) {
    for (const char* option : {"compress", "encrypt-rsa-key", "access-key", "secret-key",
                               "session-token", "region", "skip-tls-verify"}) {
      if (args.Has(option)) {
        return Invalid(std::string("--") + option +
                       " goes with --storage; a volume uses its own settings");
      }
    }
    const std::string& url = args.positional()[0];
    ASSIGN_OR_RETURN(std::unique_ptr<KvStore> kv, OpenKv(url));
    ASSIGN_OR_RETURN(t.settings, Meta::LoadSettings(*kv));
    t.volume = t.settings.name + " (" + url + ")";
    t.prefix = t.settings.name + "/" + run;
  } else {
    if (!args.Has("storage") || !args.Has("bucket")) {
      return Invalid("--storage and --bucket go together (see --help)");
    }
    t.settings.storage = *args.Get("storage");
    t.settings.bucket = *args.Get("bucket");
    if (args.Has("access-key") != args.Has("secret-key")) {
      return Invalid("give --access-key and --secret-key together");
    }
    t.settings.access_key = args.Get("access-key", "");
    t.settings.secret_key = args.Get("secret-key", "");
    t.settings.session_token = args.Get("session-token", "");
    t.settings.region = args.Get("region", "");
    t.settings.skip_tls_verify = args.Has("skip-tls-verify");
    if (t.settings.storage == "file") {
      // A benchmark must not leave a new directory behind a typo.
      std::error_code ec;
      if (!std::filesystem::is_directory(t.settings.bucket, ec)) {
        return Invalid("bucket directory " + t.settings.bucket + " does not exist");
      }
    }
    ASSIGN_OR_RETURN(Compression c, ParseCompression(args.Get("compress", "none")));
    t.settings.compression = CompressionName(c);
    if (auto key = args.Get("encrypt-rsa-key")) {
      RETURN_IF_ERROR(SetUpEncryption(*key, &t.settings));
    }
    t.prefix = run;
  }
  ASSIGN_OR_RETURN(t.store, OpenVolumeStore(t.settings));
  return t;
}

void PrintHeader(const Target& t, const Config& cfg, int argc, char** argv) {
  PrintBenchmarkTitle("objbench", argc, argv);
  if (!t.volume.empty()) std::printf("volume:      %s\n", t.volume.c_str());
  std::printf("store:       %s (%s)\n", t.store->Describe().c_str(), t.settings.storage.c_str());
  std::printf("transforms:  compression %s, encryption %s\n", t.settings.compression.c_str(),
              DescribeEncryption(t.settings).c_str());
  std::printf("prefix:      %s\n", t.prefix.c_str());
  std::printf("threads:     %u\n", cfg.threads);
  std::printf("objects:     %llu of %s, %llu of %s, %s data\n\n",
              static_cast<unsigned long long>(cfg.small_objects),
              FormatBytes(cfg.small_size).c_str(), static_cast<unsigned long long>(cfg.big_objects),
              FormatBytes(cfg.big_size).c_str(), cfg.text ? "text" : "random");
}

}  // namespace

int RunObjbench(int argc, char** argv) {
  Args args;
  for (const char* v : {"storage", "bucket", "compress", "encrypt-rsa-key", "threads",
                        "small-objects", "small-size", "big-objects", "big-size", "fill",
                        "access-key", "secret-key", "session-token", "region"}) {
    args.Value(v);
  }
  args.Flag("skip-tls-verify");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("objbench", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  Config cfg;
  auto threads = args.GetCount("threads", cfg.threads, 1, 256);
  if (!threads.ok()) return Fail("objbench", threads.status());
  cfg.threads = static_cast<unsigned>(*threads);
  auto small_objects = args.GetCount("small-objects", cfg.small_objects, 0, 10'000'000);
  if (!small_objects.ok()) return Fail("objbench", small_objects.status());
  cfg.small_objects = *small_objects;
  auto big_objects = args.GetCount("big-objects", cfg.big_objects, 0, 1'000'000);
  if (!big_objects.ok()) return Fail("objbench", big_objects.status());
  cfg.big_objects = *big_objects;
  auto small_size = args.GetSize("small-size", cfg.small_size, 1, 256u << 20);
  if (!small_size.ok()) return Fail("objbench", small_size.status());
  cfg.small_size = *small_size;
  auto big_size = args.GetSize("big-size", cfg.big_size, 1, 256u << 20);
  if (!big_size.ok()) return Fail("objbench", big_size.status());
  cfg.big_size = *big_size;
  const std::string fill = args.Get("fill", "random");
  if (fill != "random" && fill != "text") {
    return Fail("objbench", "--fill must be random or text, not '" + fill + "'");
  }
  cfg.text = fill == "text";

  auto target = OpenTarget(args);
  if (!target.ok()) return Fail("objbench", target.status());
  ObjectStore& store = *target->store;
  const Objects objs(target->prefix, cfg);

  // Ctrl-C stops the workers at their next request, then the objects go.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  struct sigaction old_int, old_term;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  PrintHeader(*target, cfg, argc, argv);
  std::fflush(stdout);
  std::vector<Row> rows;
  Status run;
  if (cfg.small_objects > 0) {
    run = RunSize(store, objs, cfg, "small", cfg.small_objects, cfg.small_size, &rows);
  }
  if (run.ok() && cfg.big_objects > 0) {
    run = RunSize(store, objs, cfg, "big", cfg.big_objects, cfg.big_size, &rows);
  }
  auto left = Cleanup(store, objs.prefix());
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (!run.ok()) {
    if (left.ok()) return Fail("objbench", run);
    return Fail("objbench", run.ToString() + " (objects may be left under " + objs.prefix() + ": " +
                                left.status().ToString() + ")");
  }
  if (!left.ok()) {
    return Fail("objbench", "cannot remove the objects under " + objs.prefix() + ": " +
                                left.status().ToString());
  }
  if (*left != 0) {
    return Fail("objbench", std::to_string(*left) +
                                " objects were still there after the delete "
                                "phase (removed now)");
  }
  PrintTable(rows);
  return 0;
}

}  // namespace tessera
