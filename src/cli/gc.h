// Garbage collection behind `tessera gc`: lists a volume's block objects
// against its metadata, reports what the bucket holds, and with `delete`
// removes what no file can ever read and finishes the deletions left over.
//
// The metadata is read in pages (many short read transactions, as fsck
// does), so the volume may be mounted meanwhile; what is learnt goes into a
// dense table with 4 bytes per slice id below the nextSlice counter (the
// slice's size and a few flags). The bucket is then listed page by page and
// each object is classified on its own, so memory does not grow with the
// number of objects:
//
//   valid    a block of a slice some file's chunk references, with the block
//            index and size that slice's size gives
//   pending  a block of a slice waiting for deletion: freed (a G record),
//            replaced by compaction (an L record), or used only by files
//            whose last link went (R and SS records)
//   leaked   anything else named like a block of a slice id that was handed
//            out before the scan: a slice never committed (a writer that
//            crashed between upload and commit), a deletion that got lost,
//            or a block whose index or size does not fit its slice
//   skipped  objects modified within `skip_window_ns` before the scan (an
//            upload in flight has blocks before its slice is committed),
//            blocks of slice ids handed out after the scan started, and keys
//            that are not block names
//
// With `delete`: files whose last link went are deleted (Meta::
// ReclaimUnlinked), the blocks of freed slices and of replaced slices whose
// time has come are deleted and their records dropped, and leaked objects
// are deleted. A block of a slice that a chunk references is never deleted;
// before leaked objects go, the metadata is read once more and slices that
// some chunk (or a deletion record) names by then are left alone.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "data/compactor.h"
#include "meta/meta.h"
#include "object/object_store.h"

namespace tessera {

// How many things, and their bytes.
struct GcCount {
  uint64_t count = 0;
  uint64_t bytes = 0;
  void Add(uint64_t n) {
    count++;
    bytes += n;
  }
};

struct GcReport {
  // From the metadata. Files whose last link went but whose data is still
  // there (bytes: their lengths): those being deleted in the background (R
  // records) and those a mount still holds open (SS records).
  GcCount unlinked_files;
  GcCount open_unlinked_files;
  // Slices waiting for their blocks to be deleted (bytes: slice sizes):
  // freed (G records), and replaced by compaction (L records) whose time
  // has come or not yet.
  GcCount freed_slices;
  GcCount delayed_slices_due;
  GcCount delayed_slices_later;
  // Files in the volume's trash and their data (when the trash is on, or
  // holds anything).
  std::optional<GcCount> trash;
  uint64_t slices = 0;              // slices referenced by chunks
  uint64_t fragmented_chunks = 0;   // chunks of linked files with more than one slice record

  // From the listing of <volume>/chunks/ (bytes: object sizes as stored).
  GcCount listed;
  GcCount valid;
  GcCount pending;
  GcCount leaked;
  // Of the leaked ones, blocks of slices that chunks reference (an index or
  // size that does not fit the slice): never deleted.
  GcCount leaked_in_use;
  GcCount skipped;
  GcCount skipped_recent;     // modified within the skip window
  GcCount skipped_new_slice;  // slice id handed out after the scan started
  GcCount skipped_not_block;  // not a block name
  std::vector<std::string> leaked_examples;  // a few keys, for the report

  // With `delete`.
  bool deleted = false;
  uint64_t trash_emptied = 0;  // entries of expired trash hours deleted
  uint64_t files_reclaimed = 0;
  uint64_t freed_slices_deleted = 0;
  uint64_t delayed_slices_deleted = 0;
  GcCount leaked_deleted;
  uint64_t leaked_now_used = 0;  // leaked at the listing, named by metadata at the re-check
  uint64_t freed_slices_in_use = 0;  // deletion records of slices chunks reference: kept
  uint64_t delete_failures = 0;  // objects or slices whose deletion failed (kept for the next run)

  // With `compact`.
  bool compacted = false;
  uint64_t chunks_compacted = 0;
  uint64_t records_before = 0;
  uint64_t records_after = 0;
  uint64_t compact_failures = 0;

  // Things worth knowing: the first error of a failed deletion, ...
  std::vector<std::string> notes;
  double elapsed_s = 0;

  // Leaked objects still in the bucket after the run: all of them without
  // `delete`; else those of slices in use, those whose deletion failed, and
  // all of them when deleting was not safe (see notes).
  uint64_t leaked_remaining = 0;
  // Seconds spent reading the metadata (first pass), listing the bucket
  // (first pass), and deleting (everything `delete` did).
  double scan_s = 0;
  double list_s = 0;
  double delete_s = 0;
};

struct GcProgress {
  const char* phase = "";  // "scanning metadata", "listing objects", ...
  const char* unit = "";   // what `done` counts: "keys", "objects", "slices", ...
  uint64_t done = 0;       // so far in this phase
  double per_second = 0;   // over the phase so far
};

// Merges the slices of one chunk (Compactor::CompactChunk with full = true).
using CompactChunkFn = std::function<Result<CompactResult>(InodeId, uint32_t)>;

struct GcOptions {
  bool delete_garbage = false;
  // Compact chunks of linked files that hold more than one slice record
  // (after the scan and the deletions) with this; none when empty.
  CompactChunkFn compact;
  // Deletes (and compactions) at once.
  size_t threads = 10;
  // Objects modified less than this long before the scan are not judged.
  int64_t skip_window_ns = int64_t{3600} * 1'000'000'000;
  // The scan's start time (0: the clock); tests move it.
  int64_t now_ns = 0;
  size_t meta_page = 4096;  // keys per read transaction
  size_t list_page = 1000;  // objects per listing request
  // Called now and then (at most a few times a second) from the calling
  // thread; may be empty.
  std::function<void(const GcProgress&)> progress;
};

// Runs gc on the volume of `meta` whose block objects are in `store`, named
// as SliceStore names them (no compression or encryption layer is needed:
// objects are only listed and deleted). Errors: the engine's or the store's
// (a failed listing stops the run; a failed deletion is counted and the run
// goes on).
Result<GcReport> CollectGarbage(Meta& meta, ObjectStore& store, const GcOptions& options);

}  // namespace tessera
