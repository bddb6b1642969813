// Backing up and moving a volume's metadata: DumpVolume writes every key of
// a volume as one JSON document, LoadVolume writes such a document into an
// empty engine of any type. The format is described in docs/operations.md
// ("Backing up and moving metadata: dump and load").
//
// Records the dump understands (attributes, entries, chunks, symlink
// targets, trash origins, extended attributes, counters, slice records,
// settings) are written in a readable form; any other key, and any record
// whose readable form would not give back exactly the same bytes, is
// written as hex key and base64 value, so a dump and load loses nothing. Live session state is left
// out on purpose: sessions (SE), their lock markers (SL) and lock records
// (A<ino>F, A<ino>P); a file a session holds open after its last unlink
// (SS) is written as a pending deletion, like an R record.
//
// Memory: both directions stream. The dump holds one page of keys (plus the
// inode numbers of SS records, which only files open after unlink have);
// the load holds one record and one batch of keys to write.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

inline constexpr int kDumpFormatVersion = 1;

struct DumpOptions {
  // Keys per Scan call.
  size_t page_size = 1000;
  // Times the dump starts over when the engine cannot keep its snapshot
  // (kConflict: Redis keeps one for a bounded number of commits).
  int max_restarts = 3;
  // Called before starting over: must discard what the attempt before wrote
  // to the output (truncate the file), or fail. Null: starting over fails.
  std::function<Status()> restart;
};

struct DumpStats {
  uint64_t inodes = 0;   // inodes with attributes
  uint64_t keys = 0;     // keys written (excluded session state not counted)
  uint64_t raw = 0;      // of them, written as hex key + base64 value
  int attempts = 0;      // 1 + the times the dump started over
};

// Writes the volume in `kv` to `out`, all of it read in one read
// transaction, so that it is one consistent snapshot. The output depends
// only on the keys stored: dumping a loaded volume gives the same bytes.
// Errors: kNotFound when `kv` holds no volume, kConflict when the snapshot
// could not be kept after the restarts, kIo when `out` fails, the engine's.
Status DumpVolume(KvStore& kv, std::ostream& out, const DumpOptions& options = {},
                  DumpStats* stats = nullptr);

struct LoadOptions {
  // A transaction is committed when it holds this many keys, or this many
  // bytes of keys and values (etcd bounds both per request).
  size_t batch_keys = 1000;
  size_t batch_bytes = 1 << 20;
};

struct LoadStats {
  uint64_t inodes = 0;  // inodes with attributes
  uint64_t keys = 0;
  uint64_t transactions = 0;
};

// Writes the dump read from `in` into `kv`, which must hold no key at all
// (kExists otherwise, before anything is written). Keys are written in
// transactions of bounded size; the volume settings go in the last one, so
// that a load that fails halfway leaves something no client mounts (the
// engine must then be emptied before loading again). Errors: kExists,
// kInvalid for input that is not a tessera dump or has a record that does
// not decode (the message names the line and the record) and for input that
// ends early, kNotSupported for another format version, the engine's.
Status LoadVolume(KvStore& kv, std::istream& in, const LoadOptions& options = {},
                  LoadStats* stats = nullptr);

// What LoadVolume checks first: kExists when `kv` holds any key.
Status CheckLoadTarget(KvStore& kv);

// Reads a dump as LoadVolume does, without writing anything: the same
// errors for the same input. Lets a caller that can read its input twice
// refuse a bad file before the engine is touched.
Status CheckDump(std::istream& in, LoadStats* stats = nullptr);

}  // namespace tessera
