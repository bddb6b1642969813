// tessera mdtest: measures the metadata engine itself, calling Meta directly
// (no FUSE, no kernel, no object store), so that engines can be compared
// with each other and with the per-operation latencies other systems
// publish, and a slow mount can be told apart from a slow engine.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/thread_pool.h"
#include "common/units.h"
#include "kv/kv.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr const char* kHelp =
    R"(Usage: tessera mdtest [OPTIONS] META-URL

Benchmark a volume's metadata engine directly: every operation is one call
into the metadata layer, which is one transaction on the engine (SQLite,
Redis, PostgreSQL, etcd), timed from the call to its return. No FUSE, no
kernel, no caches of a mount and no object store are involved, so the
figures are the engine's per-operation latency as a client sees it.

The volume must have been formatted with 'tessera format'; it may be
mounted meanwhile. Everything happens in a new directory at the volume's
root, /.mdtest-<host>-<pid>, which is removed with its contents at the end,
also on error or Ctrl-C; no other file of the volume is touched. While it
runs, 'tessera status' lists it as a session with mount point (mdtest).

Each thread works in its own subdirectory; the phases run one after the
other, all threads together:
  mkdir    make --files directories
  create   make --files empty regular files
  lookup   look each file up by name in its directory
  getattr  read each file's attributes by inode
  setattr  change each file's mode (chmod)
  readdir  list a directory of --dir-size entries completely, 20 times per
           thread, in pages of up to 1024 entries with their attributes
           (READDIRPLUS, as a mount reads for the kernel); the directory is
           filled before the phase and shared by all threads
  rename   rename each file within its directory
  unlink   remove each file
  rmdir    remove each directory
For each phase it prints the operations, the wall time, operations per
second (all threads together) and the mean, median and 99th-percentile
latency of one call; for readdir of one full listing and of one page.

Options:
  --files N      files (and directories) per thread (default 1000)
  --threads N    threads, each with its own directory (default 1)
  --dir-size N   entries in the directory the readdir phase lists
                 (default 1000)
  --json         print one JSON object instead of the table
)";

// Entries per ReadDir call: what a mount asks for (vfs.cc's kDirPage).
constexpr size_t kPageSize = 1024;
// Full listings per thread in the readdir phase: one listing is a few
// calls, too few samples for a percentile.
constexpr uint64_t kListings = 20;
// Seconds between heartbeats: the default of a mount, so that the session
// is never taken for a dead one during a long run.
constexpr int kHeartbeatSeconds = 12;

std::atomic<bool> g_interrupted{false};

void OnSignal(int) { g_interrupted.store(true); }

Status CheckInterrupted() {
  if (g_interrupted.load()) return Unavailable("interrupted");
  return Status::Ok();
}

struct Config {
  uint64_t files = 1000;
  unsigned threads = 1;
  uint64_t dir_size = 1000;
  bool json = false;
};

// One thread's samples in a phase.
struct WorkerStats {
  uint64_t ops = 0;
  std::vector<int64_t> latency_ns;
  std::vector<int64_t> page_ns;  // readdir: one per ReadDir call
};

// A phase's figures. Only these are kept: the samples of 10 million calls
// would not fit in memory for every phase at once.
struct Summary {
  uint64_t ops = 0;
  double seconds = 0;
  double mean_us = 0, p50_us = 0, p99_us = 0;
};

struct PhaseResult {
  std::string name;
  Summary calls;
  Summary pages;  // readdir only (ops 0 otherwise)
};

double Percentile(std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(p * static_cast<double>(sorted.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]);
}

Summary Summarize(uint64_t ops, double seconds, std::vector<int64_t> ns) {
  Summary s;
  s.ops = ops;
  s.seconds = seconds;
  std::sort(ns.begin(), ns.end());
  double total = 0;
  for (int64_t v : ns) total += static_cast<double>(v);
  if (!ns.empty()) s.mean_us = total / static_cast<double>(ns.size()) / 1e3;
  s.p50_us = Percentile(ns, 0.50) / 1e3;
  s.p99_us = Percentile(ns, 0.99) / 1e3;
  return s;
}

// Runs op() and records how long it took: the figure is the call alone.
Status Timed(std::vector<int64_t>* samples, const std::function<Status()>& op) {
  const int64_t t0 = MonoNanos();
  Status st = op();
  samples->push_back(MonoNanos() - t0);
  return st;
}

std::string Name(char prefix, uint64_t i) { return prefix + std::to_string(i); }

// The benchmark's tree: /.mdtest-<host>-<pid>/{t0..tN-1, list}. Thread w
// works in t<w>: directories d<i>, files f<i> (r<i> once renamed).
class MdTest {
 public:
  MdTest(Meta& meta, const Config& cfg, const Context& ctx, std::string scratch)
      : meta_(meta), cfg_(cfg), ctx_(ctx), scratch_(std::move(scratch)) {}

  const std::string& scratch() const { return scratch_; }

  // Makes the scratch directory and the threads' directories. An existing
  // scratch directory is an error, not reused: it is someone else's.
  Status Setup() {
    auto root = meta_.Mkdir(ctx_, kRootInode, scratch_, 0755);
    if (root.status().Is(StatusCode::kExists)) {
      return Exists("/" + scratch_ + " already exists in the volume (left by an earlier run?)");
    }
    RETURN_IF_ERROR(root.status().WithContext("making /" + scratch_));
    root_ = root->inode;
    created_ = true;
    for (unsigned w = 0; w < cfg_.threads; ++w) {
      ASSIGN_OR_RETURN(EntryInfo dir, meta_.Mkdir(ctx_, root_, Name('t', w), 0755));
      thread_dirs_.push_back(dir.inode);
    }
    files_.assign(cfg_.threads, {});
    return Status::Ok();
  }

  // Runs the phases in order; `done` gets each one as it finishes.
  Status Run(const std::function<void(const PhaseResult&)>& done) {
    // One timed call per file (or directory) i of the thread.
    auto each = [&](WorkerStats* s, const std::function<Status(uint64_t)>& fn) {
      for (uint64_t i = 0; i < cfg_.files; ++i) {
        RETURN_IF_ERROR(CheckInterrupted());
        RETURN_IF_ERROR(Timed(&s->latency_ns, [&] { return fn(i); }));
        s->ops++;
      }
      return Status::Ok();
    };
    RETURN_IF_ERROR(Phase("mkdir", done, [&](unsigned w, WorkerStats* s) {
      return each(s, [&](uint64_t i) {
        return meta_.Mkdir(ctx_, thread_dirs_[w], Name('d', i), 0755).status();
      });
    }));
    RETURN_IF_ERROR(Phase("create", done, [&](unsigned w, WorkerStats* s) {
      files_[w].reserve(cfg_.files);
      return each(s, [&](uint64_t i) {
        auto e = meta_.Mknod(ctx_, thread_dirs_[w], Name('f', i), S_IFREG | 0644, 0);
        if (e.ok()) files_[w].push_back(e->inode);
        return e.status();
      });
    }));
    RETURN_IF_ERROR(Phase("lookup", done, [&](unsigned w, WorkerStats* s) {
      return each(s, [&](uint64_t i) -> Status {
        ASSIGN_OR_RETURN(EntryInfo e, meta_.Lookup(ctx_, thread_dirs_[w], Name('f', i)));
        if (e.inode != files_[w][i]) return Corrupt("lookup of " + Name('f', i) + ": wrong inode");
        return Status::Ok();
      });
    }));
    RETURN_IF_ERROR(Phase("getattr", done, [&](unsigned w, WorkerStats* s) {
      return each(s, [&](uint64_t i) { return meta_.GetAttr(files_[w][i]).status(); });
    }));
    RETURN_IF_ERROR(Phase("setattr", done, [&](unsigned w, WorkerStats* s) {
      SetAttrRequest chmod;
      chmod.mode = 0600;
      return each(s, [&](uint64_t i) { return meta_.SetAttr(ctx_, files_[w][i], chmod).status(); });
    }));
    RETURN_IF_ERROR(FillListing());
    RETURN_IF_ERROR(Phase("readdir", done, [&](unsigned, WorkerStats* s) { return List(s); }));
    RETURN_IF_ERROR(Phase("rename", done, [&](unsigned w, WorkerStats* s) {
      return each(s, [&](uint64_t i) {
        return meta_.Rename(ctx_, thread_dirs_[w], Name('f', i), thread_dirs_[w], Name('r', i), 0);
      });
    }));
    RETURN_IF_ERROR(Phase("unlink", done, [&](unsigned w, WorkerStats* s) {
      return each(s, [&](uint64_t i) { return meta_.Unlink(ctx_, thread_dirs_[w], Name('r', i)); });
    }));
    return Phase("rmdir", done, [&](unsigned w, WorkerStats* s) {
      return each(s, [&](uint64_t i) { return meta_.Rmdir(ctx_, thread_dirs_[w], Name('d', i)); });
    });
  }

  // Removes the scratch directory and whatever is left in it (all of the
  // tree after an error or an interruption). Not interruptible: a second
  // Ctrl-C must not leave half of it behind.
  Status Cleanup() {
    if (!created_) return Status::Ok();
    RETURN_IF_ERROR(Empty(root_));
    RETURN_IF_ERROR(meta_.Rmdir(ctx_, kRootInode, scratch_));
    created_ = false;
    removed_ = true;
    return Status::Ok();
  }
  // Whether Cleanup removed the tree (Setup may have failed before making it).
  bool removed() const { return removed_; }

 private:
  // Runs work(worker, stats) on every thread, timing the phase's wall
  // clock. The first error stops the other threads at their next call.
  Status Phase(const std::string& name, const std::function<void(const PhaseResult&)>& done,
               const std::function<Status(unsigned, WorkerStats*)>& work) {
    std::vector<WorkerStats> stats(cfg_.threads);
    const int64_t start = MonoNanos();
    Status first = RunOnThreads(
        cfg_.threads, [&](unsigned w) { return work(w, &stats[w]); },
        [] { g_interrupted.store(true); });
    const double seconds = static_cast<double>(MonoNanos() - start) / 1e9;
    if (!first.ok()) return first.WithContext(name);
    uint64_t ops = 0;
    std::vector<int64_t> calls, pages;
    for (WorkerStats& s : stats) {
      ops += s.ops;
      calls.insert(calls.end(), s.latency_ns.begin(), s.latency_ns.end());
      pages.insert(pages.end(), s.page_ns.begin(), s.page_ns.end());
    }
    PhaseResult r;
    r.name = name;
    r.calls = Summarize(ops, seconds, std::move(calls));
    const uint64_t page_calls = pages.size();  // before the move below
    if (page_calls > 0) r.pages = Summarize(page_calls, seconds, std::move(pages));
    done(r);
    return Status::Ok();
  }

  // The readdir phase's directory, filled by all threads (not timed).
  Status FillListing() {
    ASSIGN_OR_RETURN(EntryInfo dir, meta_.Mkdir(ctx_, root_, "list", 0755));
    list_ = dir.inode;
    std::vector<std::thread> workers;
    std::vector<Status> results(cfg_.threads);
    for (unsigned w = 0; w < cfg_.threads; ++w) {
      workers.emplace_back([&, w] {
        for (uint64_t i = w; i < cfg_.dir_size && results[w].ok(); i += cfg_.threads) {
          results[w] = CheckInterrupted();
          if (results[w].ok()) {
            results[w] = meta_.Mknod(ctx_, list_, Name('e', i), S_IFREG | 0644, 0).status();
          }
        }
      });
    }
    for (auto& t : workers) t.join();
    for (const Status& st : results)
      RETURN_IF_ERROR(st.WithContext("filling the listed directory"));
    return Status::Ok();
  }

  // kListings full listings of the shared directory, page by page as a
  // mount would read them for the kernel.
  Status List(WorkerStats* s) {
    for (uint64_t l = 0; l < kListings; ++l) {
      uint64_t cookie = 0, seen = 0;
      const int64_t t0 = MonoNanos();
      for (bool more = true; more;) {
        RETURN_IF_ERROR(CheckInterrupted());
        Result<DirPage> page = Status(StatusCode::kInternal, "not run");
        RETURN_IF_ERROR(Timed(&s->page_ns, [&] {
          page = meta_.ReadDir(list_, cookie, kPageSize, /*plus=*/true);
          return page.status();
        }));
        seen += page->items.size();
        more = page->more && !page->items.empty();
        if (!page->items.empty()) cookie = page->items.back().cookie;
      }
      s->latency_ns.push_back(MonoNanos() - t0);
      if (seen != cfg_.dir_size) {
        return IoError("a listing found " + std::to_string(seen) + " entries, not " +
                       std::to_string(cfg_.dir_size));
      }
      s->ops++;
    }
    return Status::Ok();
  }

  // Removes everything inside `dir`. Each pass lists from the start, since
  // what it removed is gone; an entry that cannot be removed is an error,
  // so the loop ends.
  Status Empty(InodeId dir) {
    for (;;) {
      ASSIGN_OR_RETURN(DirPage page, meta_.ReadDir(dir, 0, kPageSize, /*plus=*/false));
      if (page.items.empty()) return Status::Ok();
      for (const DirItem& item : page.items) {
        Status st;
        if (item.type == S_IFDIR) {
          RETURN_IF_ERROR(Empty(item.inode));
          st = meta_.Rmdir(ctx_, dir, item.name);
        } else {
          st = meta_.Unlink(ctx_, dir, item.name);
        }
        if (!st.ok() && !st.Is(StatusCode::kNotFound))
          return st.WithContext("removing " + item.name);
      }
    }
  }

  Meta& meta_;
  const Config& cfg_;
  const Context ctx_;
  const std::string scratch_;  // its name in the root directory
  InodeId root_, list_;
  bool created_ = false, removed_ = false;
  std::vector<InodeId> thread_dirs_;
  std::vector<std::vector<InodeId>> files_;  // per thread, f<i>'s inode at i
};

// Keeps the session alive like a mount does, so that other clients do not
// clean it up during a long run and `tessera status` shows it as live.
class Heartbeat {
 public:
  explicit Heartbeat(Meta& meta)
      : thread_([this, &meta] {
          std::unique_lock lock(mu_);
          while (!cv_.wait_for(lock, std::chrono::seconds(kHeartbeatSeconds),
                               [&] { return stopping_; })) {
            lock.unlock();
            (void)meta.Heartbeat();  // a missed one is retried next time
            lock.lock();
          }
        }) {}
  ~Heartbeat() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;     // last: starts once the members above exist
};

void PrintHeader(Meta& meta, const MdTest& test, const Config& cfg, int argc, char** argv) {
  PrintBenchmarkTitle("mdtest", argc, argv);
  std::printf("engine:      %s (volume %s)\n", meta.kv().Url().c_str(),
              meta.settings().name.c_str());
  std::printf("directory:   /%s (removed at the end)\n", test.scratch().c_str());
  std::printf("threads:     %u, %llu files and directories each\n", cfg.threads,
              static_cast<unsigned long long>(cfg.files));
  std::printf("readdir:     %llu listings per thread of %llu entries, pages of up to %zu\n\n",
              static_cast<unsigned long long>(kListings),
              static_cast<unsigned long long>(cfg.dir_size), kPageSize);
  std::printf("%-13s %10s %9s %11s %10s %10s %10s\n", "phase", "ops", "time (s)", "ops/s",
              "mean us", "p50 us", "p99 us");
  std::fflush(stdout);
}

void PrintRow(const std::string& name, const Summary& s) {
  const double secs = s.seconds > 0 ? s.seconds : 1e-9;
  std::printf("%-13s %10llu %9.3f %11.1f %10.1f %10.1f %10.1f\n", name.c_str(),
              static_cast<unsigned long long>(s.ops), s.seconds, static_cast<double>(s.ops) / secs,
              s.mean_us, s.p50_us, s.p99_us);
  std::fflush(stdout);
}

void PrintFooter(Meta& meta, const Config& cfg) {
  std::printf(
      "\nEach operation is one call into the metadata layer, which runs it as one\n"
      "transaction on the engine; the time is that call's, from the client's side.\n"
      "No kernel, no FUSE, no caches of a mount, no object store. ops/s counts\n"
      "all threads over the phase's wall time. readdir: one full listing of %llu\n"
      "entries with their attributes, in pages of up to %zu as a mount reads them;\n"
      "readdir page: one of those calls. 1 ms = 1000 us.\n"
      "Engine: %s\n",
      static_cast<unsigned long long>(cfg.dir_size), kPageSize, meta.kv().Url().c_str());
}

// Three decimals: nanoseconds for latencies; more digits would be noise.
double Round3(double v) { return std::round(v * 1000) / 1000; }

nlohmann::ordered_json SummaryJson(const Summary& s) {
  nlohmann::ordered_json j;
  j["ops"] = s.ops;
  j["seconds"] = Round3(s.seconds * 1000) / 1000;  // to the microsecond
  j["ops_per_second"] = Round3(s.seconds > 0 ? static_cast<double>(s.ops) / s.seconds : 0.0);
  j["mean_us"] = Round3(s.mean_us);
  j["p50_us"] = Round3(s.p50_us);
  j["p99_us"] = Round3(s.p99_us);
  return j;
}

void PrintJson(Meta& meta, const Config& cfg, const std::vector<PhaseResult>& phases) {
  nlohmann::ordered_json j;
  j["version"] = kVersion;
  j["engine"] = meta.kv().Url();
  j["volume"] = meta.settings().name;
  j["threads"] = cfg.threads;
  j["files_per_thread"] = cfg.files;
  j["dir_size"] = cfg.dir_size;
  j["listings_per_thread"] = kListings;
  j["page_size"] = kPageSize;
  j["phases"] = nlohmann::ordered_json::array();
  for (const PhaseResult& p : phases) {
    nlohmann::ordered_json row = {{"name", p.name}};
    row.update(SummaryJson(p.calls));
    if (p.pages.ops > 0) row["page"] = SummaryJson(p.pages);
    j["phases"].push_back(std::move(row));
  }
  std::printf("%s\n", j.dump(2).c_str());
}

}  // namespace

int RunMdtest(int argc, char** argv) {
  Args args;
  for (const char* v : {"files", "threads", "dir-size"}) args.Value(v);
  args.Flag("json");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("mdtest", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) return Fail("mdtest", "expected one META-URL (see --help)");
  Config cfg;
  auto files = args.GetCount("files", cfg.files, 1, 10'000'000);
  if (!files.ok()) return Fail("mdtest", files.status());
  cfg.files = *files;
  auto threads = args.GetCount("threads", cfg.threads, 1, 256);
  if (!threads.ok()) return Fail("mdtest", threads.status());
  cfg.threads = static_cast<unsigned>(*threads);
  auto dir_size = args.GetCount("dir-size", cfg.dir_size, 1, 1'000'000);
  if (!dir_size.ok()) return Fail("mdtest", dir_size.status());
  cfg.dir_size = *dir_size;
  cfg.json = args.Has("json");

  auto kv = OpenKv(args.positional()[0]);
  if (!kv.ok()) return Fail("mdtest", kv.status());
  auto opened = Meta::Open(std::move(*kv));
  if (!opened.ok()) return Fail("mdtest", opened.status());
  Meta& meta = **opened;

  // Ctrl-C stops the threads at their next call, then the tree and the
  // session go.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  struct sigaction old_int, old_term;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  const uint32_t pid = static_cast<uint32_t>(getpid());
  if (Status st = meta.StartSession(SessionInfo{host, pid, "(mdtest)", kVersion}); !st.ok()) {
    return Fail("mdtest", st.WithContext("starting a session"));
  }
  // The caller's ids, so that the tree looks like one this user made.
  const Context ctx{static_cast<uint32_t>(getuid()), static_cast<uint32_t>(getgid()), pid};
  MdTest test(meta, cfg, ctx, ".mdtest-" + std::string(host) + "-" + std::to_string(pid));

  std::vector<PhaseResult> phases;
  Status run;
  {
    Heartbeat heartbeat(meta);
    run = test.Setup();
    if (run.ok() && !cfg.json) PrintHeader(meta, test, cfg, argc, argv);
    if (run.ok()) {
      run = test.Run([&](const PhaseResult& p) {
        phases.push_back(p);
        if (cfg.json) return;
        PrintRow(p.name, p.calls);
        if (p.pages.ops > 0) PrintRow(p.name + " page", p.pages);
      });
    }
  }
  Status cleanup = test.Cleanup();
  Status ended = meta.EndSession();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);

  if (!run.ok()) {
    if (cleanup.ok()) {
      return Fail("mdtest",
                  run.ToString() + (test.removed() ? " (/" + test.scratch() + " removed)" : ""));
    }
    return Fail("mdtest", run.ToString() + " (/" + test.scratch() +
                              " may be left in the volume: " + cleanup.ToString() + ")");
  }
  if (!cleanup.ok()) {
    return Fail("mdtest", cleanup.WithContext("removing /" + test.scratch()));
  }
  if (!ended.ok()) return Fail("mdtest", ended.WithContext("ending the session"));
  if (cfg.json) {
    PrintJson(meta, cfg, phases);
  } else {
    PrintFooter(meta, cfg);
  }
  return 0;
}

}  // namespace tessera
