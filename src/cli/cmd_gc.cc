// tessera gc: lists a volume's block objects against its metadata and, with
// --delete, removes the garbage (cli/gc.h does the work; this file opens
// the volume, shows progress and prints the report).
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/gc.h"
#include "cli/volume_store.h"
#include "common/units.h"
#include "data/block_reader.h"
#include "data/compactor.h"
#include "data/slice_store.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "object/object_store.h"
#include "object/retry_store.h"
#include "vfs/meta_chunks.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera gc [--delete] [--compact] [--threads N] [--json] META-URL

List the volume's block objects (everything under <volume>/chunks/ in the
bucket) against its metadata and report what the bucket holds:

  pending deleted files   files whose last link went whose data is still
                          there: being deleted in the background, or held
                          open by a mount (deleted at their last close)
  pending deleted slices  slices no file uses any more whose blocks wait for
                          deletion: freed by a delete or truncate, or
                          replaced by compaction (deleted a minute later)
  leaked objects          blocks no file can ever read: of a slice that was
                          never committed (a writer that died between upload
                          and commit), of a deletion that got lost, or with
                          an index or size that does not fit their slice
  valid objects           blocks of slices that files use
  pending objects         blocks of the pending deletions above
  skipped objects         objects modified within the last hour (a write in
                          flight uploads blocks before it commits them),
                          blocks of slices handed out after gc started, and
                          keys that are not block names: not judged

The metadata is read in many short transactions and the bucket is listed
page by page, so gc may run while the volume is mounted and its memory does
not grow with the number of objects (4 bytes per slice id).

Options:
  --delete        delete the leaked objects and finish the pending
                  deletions: delete unlinked files no mount holds open, the
                  blocks of freed slices and of replaced slices whose time
                  has come, and drop their records. Before deleting leaked
                  objects the metadata is read again, and slices named by
                  then keep their objects. A block of a slice a file uses is
                  never deleted, nor anything in the skip window.
  --compact       merge the slices of chunks that hold more than one slice
                  record into one (as tessera compact does); the replaced
                  slices are deleted a minute later (by a mount, or the
                  next gc --delete). Needs the volume's passphrase
                  (TESSERA_RSA_PASSPHRASE) when it is encrypted.
  --threads N     deletions (and merges) at once (default 10)
  --json          print one JSON object with the figures

Progress (objects listed, and the rate) is shown on stderr when it is a
terminal.

Exit status: 0 when no leaked object is left (none found, or --delete
removed them all), 1 when leaked objects remain, 2 for bad usage or a
volume that cannot be reached.
)";

int Usage(const std::string& message) {
  Fail("gc", message);
  return 2;
}

std::string Figure(const GcCount& c, const char* what) {
  return std::to_string(c.count) + " " + what + ", " + FormatBytes(c.bytes);
}

nlohmann::ordered_json Json(const GcCount& c) { return {{"count", c.count}, {"bytes", c.bytes}}; }

GcCount Sum(const GcCount& a, const GcCount& b) { return {a.count + b.count, a.bytes + b.bytes}; }

void PrintJson(const VolumeSettings& s, const GcReport& r) {
  nlohmann::ordered_json j;
  j["volume"] = s.name;
  j["pending_deleted_files"] = Json(Sum(r.unlinked_files, r.open_unlinked_files));
  j["pending_deleted_files"]["being_deleted"] = Json(r.unlinked_files);
  j["pending_deleted_files"]["held_open"] = Json(r.open_unlinked_files);
  const GcCount delayed = Sum(r.delayed_slices_due, r.delayed_slices_later);
  j["pending_deleted_slices"] = Json(Sum(r.freed_slices, delayed));
  j["pending_deleted_slices"]["freed"] = Json(r.freed_slices);
  j["pending_deleted_slices"]["replaced_due"] = Json(r.delayed_slices_due);
  j["pending_deleted_slices"]["replaced_later"] = Json(r.delayed_slices_later);
  if (r.trash) j["trash"] = Json(*r.trash);
  j["leaked"] = Json(r.leaked);
  j["leaked"]["of_slices_in_use"] = Json(r.leaked_in_use);
  j["leaked"]["examples"] = r.leaked_examples;
  j["valid"] = Json(r.valid);
  j["pending"] = Json(r.pending);
  j["skipped"] = Json(r.skipped);
  j["skipped"]["recent"] = Json(r.skipped_recent);
  j["skipped"]["new_slices"] = Json(r.skipped_new_slice);
  j["skipped"]["not_blocks"] = Json(r.skipped_not_block);
  j["listed"] = Json(r.listed);
  j["slices"] = r.slices;
  j["fragmented_chunks"] = r.fragmented_chunks;
  if (r.deleted) {
    j["deleted"] = {{"expired_trash_entries", r.trash_emptied},
                    {"unlinked_files", r.files_reclaimed},
                    {"freed_slices", r.freed_slices_deleted},
                    {"replaced_slices", r.delayed_slices_deleted},
                    {"leaked", Json(r.leaked_deleted)},
                    {"leaked_now_in_use", r.leaked_now_used},
                    {"failures", r.delete_failures}};
  }
  if (r.compacted) {
    j["compacted"] = {{"chunks", r.chunks_compacted},
                      {"records_before", r.records_before},
                      {"records_after", r.records_after},
                      {"failures", r.compact_failures}};
  }
  j["leaked_remaining"] = r.leaked_remaining;
  j["notes"] = r.notes;
  j["scan_s"] = r.scan_s;
  j["list_s"] = r.list_s;
  if (r.deleted) j["delete_s"] = r.delete_s;
  j["elapsed_s"] = r.elapsed_s;
  std::printf("%s\n", j.dump(2).c_str());
}

void PrintText(const GcReport& r) {
  for (const std::string& key : r.leaked_examples) std::printf("leaked object: %s\n", key.c_str());
  if (r.leaked.count > r.leaked_examples.size()) {
    std::printf("leaked object: ... and %llu more\n",
                static_cast<unsigned long long>(r.leaked.count - r.leaked_examples.size()));
  }
  for (const std::string& note : r.notes) std::printf("note: %s\n", note.c_str());
  const GcCount files = Sum(r.unlinked_files, r.open_unlinked_files);
  std::printf("pending deleted files:  %s (%llu being deleted, %llu held open by a mount)\n",
              Figure(files, "files").c_str(),
              static_cast<unsigned long long>(r.unlinked_files.count),
              static_cast<unsigned long long>(r.open_unlinked_files.count));
  const GcCount delayed = Sum(r.delayed_slices_due, r.delayed_slices_later);
  std::printf("pending deleted slices: %s (%llu freed, %llu replaced by compaction, %llu of them due)\n",
              Figure(Sum(r.freed_slices, delayed), "slices").c_str(),
              static_cast<unsigned long long>(r.freed_slices.count),
              static_cast<unsigned long long>(delayed.count),
              static_cast<unsigned long long>(r.delayed_slices_due.count));
  if (r.trash) std::printf("trash:                  %s\n", Figure(*r.trash, "files").c_str());
  std::printf("leaked objects:         %s", Figure(r.leaked, "objects").c_str());
  if (r.leaked_in_use.count > 0) {
    std::printf(" (%llu of slices in use)", static_cast<unsigned long long>(r.leaked_in_use.count));
  }
  std::printf("\n");
  std::printf("valid objects:          %s (%llu slices in use)\n", Figure(r.valid, "objects").c_str(),
              static_cast<unsigned long long>(r.slices));
  std::printf("pending objects:        %s\n", Figure(r.pending, "objects").c_str());
  std::printf("skipped objects:        %s (%llu modified within the last hour, %llu of new "
              "slices, %llu not block names)\n",
              Figure(r.skipped, "objects").c_str(),
              static_cast<unsigned long long>(r.skipped_recent.count),
              static_cast<unsigned long long>(r.skipped_new_slice.count),
              static_cast<unsigned long long>(r.skipped_not_block.count));
  std::printf("fragmented chunks:      %llu\n", static_cast<unsigned long long>(r.fragmented_chunks));
  std::printf("listed:                 %s in %.2f s (%.0f objects/s)\n",
              Figure(r.listed, "objects").c_str(), r.list_s,
              r.list_s > 0 ? static_cast<double>(r.listed.count) / r.list_s : 0.0);
  if (r.deleted) {
    std::printf("deleted:                %llu expired trash entries, %llu unlinked files, %llu "
                "freed slices, %llu replaced slices, %s in %.2f s\n",
                static_cast<unsigned long long>(r.trash_emptied),
                static_cast<unsigned long long>(r.files_reclaimed),
                static_cast<unsigned long long>(r.freed_slices_deleted),
                static_cast<unsigned long long>(r.delayed_slices_deleted),
                Figure(r.leaked_deleted, "leaked objects").c_str(), r.delete_s);
    if (r.leaked_now_used > 0) {
      std::printf("kept:                   %llu leaked objects whose slice a file uses since\n",
                  static_cast<unsigned long long>(r.leaked_now_used));
    }
  }
  if (r.compacted) {
    std::printf("compacted:              %llu chunks, %llu slice records -> %llu\n",
                static_cast<unsigned long long>(r.chunks_compacted),
                static_cast<unsigned long long>(r.records_before),
                static_cast<unsigned long long>(r.records_after));
  }
  std::printf("elapsed:                %.2f s\n", r.elapsed_s);
  if (r.leaked_remaining == 0) {
    std::printf("0 leaked objects remain\n");
  } else {
    std::printf("%llu leaked objects remain%s\n",
                static_cast<unsigned long long>(r.leaked_remaining),
                r.deleted ? "" : " (run with --delete to remove them)");
  }
}

}  // namespace

int RunGc(int argc, char** argv) {
  Args args;
  args.Flag("delete");
  args.Flag("compact");
  args.Flag("json");
  args.Value("threads");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Usage(st.message());
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) return Usage("expected META-URL (see --help)");
  auto threads = args.GetCount("threads", 10, 1, 1024);
  if (!threads.ok()) return Usage(threads.status().message());

  auto kv = OpenKv(args.positional()[0]);
  if (!kv.ok()) return Usage(kv.status().ToString());
  auto meta = Meta::Open(std::move(*kv));
  if (!meta.ok()) return Usage(meta.status().ToString());
  const VolumeSettings& s = (*meta)->settings();

  // Objects are only listed and deleted, and their names do not change
  // under compression and encryption: the bare bucket does, without a
  // passphrase.
  ObjectStoreOptions o;
  o.access_key = s.access_key;
  o.secret_key = s.secret_key;
  o.session_token = s.session_token;
  o.region = s.region;
  o.skip_tls_verify = s.skip_tls_verify;
  auto opened = OpenObjectStore(s.storage, s.bucket, o);
  if (!opened.ok()) return Usage(opened.status().WithContext("bucket " + s.bucket).ToString());
  std::unique_ptr<ObjectStore> store = std::move(*opened);
  if (s.storage != "s3") store = std::make_unique<RetryStore>(std::move(store));

  GcOptions options;
  options.delete_garbage = args.Has("delete");
  options.threads = *threads;

  // Merging reads and writes block contents: the whole volume store.
  std::unique_ptr<ObjectStore> data_store;
  std::unique_ptr<SliceStore> slices;
  std::unique_ptr<BlockReader> reader;
  std::unique_ptr<MetaChunks> chunks;
  std::unique_ptr<Compactor> compactor;
  if (args.Has("compact")) {
    auto full = OpenVolumeStore(s);
    if (!full.ok()) return Usage(full.status().ToString());
    data_store = std::move(*full);
    slices = std::make_unique<SliceStore>(s.name, s.block_size, data_store.get());
    reader = std::make_unique<BlockReader>(slices.get(), nullptr, *threads);
    chunks = std::make_unique<MetaChunks>(meta->get());
    compactor = std::make_unique<Compactor>(chunks.get(), reader.get(), CompactOptions{});
    options.compact = [&](InodeId ino, uint32_t chunk) {
      return compactor->CompactChunk(ino, chunk, true);
    };
  }

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  if (tty) {
    options.progress = [](const GcProgress& p) {
      std::fprintf(stderr, "\r\033[Ktessera gc: %s: %llu %s (%.0f/s)", p.phase,
                   static_cast<unsigned long long>(p.done), p.unit, p.per_second);
      std::fflush(stderr);
    };
  }
  auto report = CollectGarbage(**meta, *store, options);
  if (tty) std::fputs("\r\033[K", stderr);
  if (!report.ok()) return Usage(report.status().ToString());

  if (args.Has("json")) {
    PrintJson(s, *report);
  } else {
    PrintText(*report);
  }
  return report->leaked_remaining == 0 ? 0 : 1;
}

}  // namespace tessera
