// tessera fsck: checks a volume's metadata and that the block objects its
// files need are in the object store (meta/meta_fsck.h does the check; this
// file wires it to the volume's bucket and prints the report).
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/slice_store.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "meta/meta_fsck.h"
#include "object/object_store.h"
#include "object/retry_store.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera fsck [--path P] [--repair] [--threads N] [--skip-objects] [--json] META-URL

Check a volume's metadata for consistency, and that every block object the
files need is in the object store. Each problem is printed on its own line
with the path(s) it affects (an inode that no directory names shows as
<orphan inode N>), then a summary.

What is checked:
  link-count      a directory's nlink must be 2 + its subdirectories; a file's
                  or symlink's the number of entries naming it (0 only while
                  a mount holds it open after its last unlink)
  dangling-entry  an entry whose inode does not exist
  entry-type      an entry whose type differs from its inode's
  orphan          an inode that no entry names and no mount holds open
  used-space      the usedSpace counter (4 KiB-rounded lengths of all files)
  used-inodes     the usedInodes counter (all inodes but the root)
  bad-slice       a slice record outside its slice or chunk, or naming a slice
                  id that was never handed out
  slice-refs      the reference count of a slice shared by several chunks
  missing-object  a block object of a slice some file uses is not in the bucket
  corrupt-record  a metadata record that cannot be decoded

The volume may be mounted while fsck runs: the metadata is read in many
short transactions, and every problem is checked again in a fresh
transaction before it is reported, so files changed during the scan do not
show up as problems. Blocks written by a --writeback mount and not uploaded
yet may show as missing objects (the message says so when a mount reports
pending uploads).

Options:
  --path P        check only the subtree at P (a path inside the volume, e.g.
                  /data/set1): link counts, entries and block objects of the
                  inodes below P. The volume-wide checks (counters, slice
                  reference counts, orphans) are skipped.
  --repair        fix what can be fixed, each fix in its own small transaction
                  that first checks the problem is still there: set link
                  counts to what the entries say, remove dangling entries,
                  correct entry types, store the recomputed counters and
                  reference counts, and move orphans into /lost+found (made
                  if missing, mode 0700) named by their inode number, so that
                  no data is deleted. Missing objects and bad slice records
                  cannot be repaired: they are reported as such.
  --threads N     block objects looked up at once (default 8)
  --skip-objects  do not look up block objects (metadata only)
  --json          print one JSON object with the findings and the summary

Exit status: 0 when the volume is consistent (or --repair fixed every
problem), 1 when problems remain, 2 for bad usage or a volume that cannot
be reached.
)";

// Bad usage and unreachable volumes exit 2, unlike other commands' Fail.
int Usage(const std::string& message) {
  Fail("fsck", message);
  return 2;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out.empty() ? "-" : out;
}

std::string State(const FsckFinding& f) {
  if (f.repaired) return " (repaired)";
  return f.repairable ? "" : " (cannot be repaired)";
}

}  // namespace

int RunFsck(int argc, char** argv) {
  Args args;
  args.Value("path");
  args.Value("threads");
  args.Flag("repair");
  args.Flag("json");
  args.Flag("skip-objects");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Usage(st.message());
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) return Usage("expected META-URL (see --help)");
  auto threads = args.GetCount("threads", 8, 1, 1024);
  if (!threads.ok()) return Usage(threads.status().message());
  FsckOptions options;
  options.path = args.Get("path", "");
  options.repair = args.Has("repair");
  options.threads = *threads;
  if (!options.path.empty() && options.path.front() != '/') {
    return Usage("--path must start with '/' (a path inside the volume)");
  }

  auto kv = OpenKv(args.positional()[0]);
  if (!kv.ok()) return Usage(kv.status().ToString());
  auto settings = Meta::LoadSettings(**kv);
  if (!settings.ok()) return Usage(settings.status().ToString());
  const VolumeSettings& s = *settings;

  // Only existence is asked, so the bucket is opened without the
  // compression and encryption layers: names do not change under them, no
  // passphrase is needed, and a head never downloads a block.
  std::unique_ptr<ObjectStore> store;
  CheckSliceObjects check;
  if (!args.Has("skip-objects")) {
    ObjectStoreOptions o;
    o.access_key = s.access_key;
    o.secret_key = s.secret_key;
    o.session_token = s.session_token;
    o.region = s.region;
    o.skip_tls_verify = s.skip_tls_verify;
    auto opened = OpenObjectStore(s.storage, s.bucket, o);
    if (!opened.ok()) return Usage(opened.status().WithContext("bucket " + s.bucket).ToString());
    store = std::move(*opened);
    if (s.storage != "s3") store = std::make_unique<RetryStore>(std::move(store));
    // Without transforms, a stored block is exactly as long as its name says.
    const bool plain = s.compression.empty() || s.compression == "none";
    const bool exact_size = plain && s.encrypt_rsa_key.empty();
    check = [&, exact_size](const SliceRef& slice) -> Result<SliceObjects> {
      const SliceStore names(s.name, s.block_size, nullptr);
      SliceObjects out;
      const uint64_t bs = s.block_size;
      for (uint64_t i = 0; i * bs < slice.size; ++i) {
        const uint64_t size = std::min<uint64_t>(bs, slice.size - i * bs);
        const std::string key = names.BlockKey(slice.id, i, size);
        out.checked++;
        auto info = store->Head(key);
        if (info.ok()) {
          if (exact_size && info->size != size) {
            out.missing.push_back(key + " (" + std::to_string(info->size) + " bytes)");
          }
          continue;
        }
        if (!info.status().Is(StatusCode::kNotFound)) return info.status();
        out.missing.push_back(key);
      }
      return out;
    };
  }

  auto report = CheckVolume(**kv, options, check);
  if (!report.ok()) return Usage(report.status().ToString());
  const FsckReport& r = *report;
  const uint64_t remaining = r.problems() - r.repaired();

  if (args.Has("json")) {
    nlohmann::ordered_json j;
    j["volume"] = s.name;
    j["findings"] = nlohmann::ordered_json::array();
    for (const FsckFinding& f : r.findings) {
      nlohmann::ordered_json jf;
      jf["kind"] = FsckKindName(f.kind);
      jf["inode"] = f.inode.value();
      jf["paths"] = f.paths;
      jf["detail"] = f.detail;
      if (f.expected) jf["expected"] = *f.expected;
      if (f.stored) jf["stored"] = *f.stored;
      jf["repairable"] = f.repairable;
      jf["repaired"] = f.repaired;
      j["findings"].push_back(std::move(jf));
    }
    j["notes"] = r.notes;
    j["summary"] = {{"inodes", r.inodes},
                    {"directories", r.directories},
                    {"files", r.files},
                    {"slices", r.slices},
                    {"objects_checked", r.objects_checked},
                    {"problems_found", r.problems()},
                    {"problems_repaired", r.repaired()},
                    {"problems_remaining", remaining},
                    {"elapsed_s", r.elapsed_s}};
    std::printf("%s\n", j.dump(2).c_str());
    return remaining == 0 ? 0 : 1;
  }

  for (const FsckFinding& f : r.findings) {
    std::printf("%s: %s: %s%s\n", std::string(FsckKindName(f.kind)).c_str(),
                Join(f.paths).c_str(), f.detail.c_str(), State(f).c_str());
  }
  for (const std::string& note : r.notes) std::printf("note: %s\n", note.c_str());
  std::printf("inodes:            %llu\n", static_cast<unsigned long long>(r.inodes));
  std::printf("directories:       %llu\n", static_cast<unsigned long long>(r.directories));
  std::printf("files:             %llu\n", static_cast<unsigned long long>(r.files));
  std::printf("slices:            %llu\n", static_cast<unsigned long long>(r.slices));
  std::printf("objects checked:   %llu%s\n", static_cast<unsigned long long>(r.objects_checked),
              check ? "" : " (--skip-objects)");
  std::printf("problems found:    %llu\n", static_cast<unsigned long long>(r.problems()));
  std::printf("problems repaired: %llu\n", static_cast<unsigned long long>(r.repaired()));
  std::printf("elapsed:           %.2f s\n", r.elapsed_s);
  if (remaining == 0) {
    std::printf("%llu problems remain: the volume is consistent\n",
                static_cast<unsigned long long>(remaining));
  } else {
    std::printf("%llu problems remain%s\n", static_cast<unsigned long long>(remaining),
                options.repair ? "" : " (run with --repair to fix what can be fixed)");
  }
  return remaining == 0 ? 0 : 1;
}

}  // namespace tessera
