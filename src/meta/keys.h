// The metadata key schema (see README.md in this folder). Inode numbers and
// chunk indexes are big-endian so that range scans come out in order.
#pragma once

#include <string>
#include <string_view>

#include "common/coding.h"
#include "common/types.h"

namespace tessera::keys {

inline std::string InodePrefix(InodeId ino) {
  std::string k = "A";
  PutBig64(&k, ino.value());
  return k;
}
// A<ino>I: attributes.
inline std::string Attr(InodeId ino) { return InodePrefix(ino) + "I"; }
// Directory entries are ordered by a hash of the name, then the name: the
// hash is a position in the directory that stays valid while entries come
// and go, so it serves as the telldir()/seekdir() cookie and a listing can
// resume from any cookie with one range scan. Values are 3 .. 2^62 - 1
// (positive off_t; 1 and 2 are "." and "..").
inline uint64_t NameHash(std::string_view name) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a, then a full-avalanche mix
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  h >>= 2;
  return h < 3 ? h + 3 : h;
}
// A<ino>D<hash><name>: a directory entry.
inline std::string Entry(InodeId dir, std::string_view name) {
  std::string k = InodePrefix(dir) + "D";
  PutBig64(&k, NameHash(name));
  k.append(name);
  return k;
}
// The first entry key positioned after `cookie` (a NameHash value).
inline std::string EntriesAfter(InodeId dir, uint64_t cookie) {
  std::string k = InodePrefix(dir) + "D";
  PutBig64(&k, cookie + 1);
  return k;
}
// First and past-the-end keys of all entries of a directory.
inline std::string EntriesBegin(InodeId dir) { return InodePrefix(dir) + "D"; }
inline std::string EntriesEnd(InodeId dir) { return InodePrefix(dir) + "E"; }
// A<ino>C<index>: the slice records of one chunk.
inline std::string Chunk(InodeId ino, uint32_t index) {
  std::string k = InodePrefix(ino) + "C";
  PutBig32(&k, index);
  return k;
}
inline std::string ChunksBegin(InodeId ino) { return InodePrefix(ino) + "C"; }
inline std::string ChunksEnd(InodeId ino) { return InodePrefix(ino) + "D"; }
// A<ino>S: symlink target.
inline std::string Symlink(InodeId ino) { return InodePrefix(ino) + "S"; }
// A<ino>X<name>: the value of one extended attribute.
inline std::string Xattr(InodeId ino, std::string_view name) {
  std::string k = InodePrefix(ino) + "X";
  k.append(name);
  return k;
}
// First and past-the-end keys of all extended attributes of an inode.
inline std::string XattrsBegin(InodeId ino) { return InodePrefix(ino) + "X"; }
inline std::string XattrsEnd(InodeId ino) { return InodePrefix(ino) + "Y"; }
// A<ino>F: flock holders; A<ino>P: POSIX byte-range locks (meta_lock.cc).
inline std::string Flocks(InodeId ino) { return InodePrefix(ino) + "F"; }
// A[ino]T: the path an entry of the trash had when it was deleted.
inline std::string TrashOrigin(InodeId ino) { return InodePrefix(ino) + "T"; }
inline std::string PosixLocks(InodeId ino) { return InodePrefix(ino) + "P"; }
// Everything stored under one inode.
inline std::string InodeBegin(InodeId ino) { return InodePrefix(ino); }
inline std::string InodeEnd(InodeId ino) { return InodePrefix(InodeId(ino.value() + 1)); }
// K<slice id><size>: references to a slice when more than one chunk holds it.
inline std::string SliceRefs(SliceId id, uint32_t size) {
  std::string k = "K";
  PutBig64(&k, id.value());
  PutBig32(&k, size);
  return k;
}
// L<due time><slice id><size>: a slice no chunk references any more, whose
// blocks are deleted at the due time (ns since the epoch), in due order.
inline std::string DelayedSlice(int64_t due_ns, SliceId id, uint32_t size) {
  std::string k = "L";
  PutBig64(&k, static_cast<uint64_t>(due_ns));
  PutBig64(&k, id.value());
  PutBig32(&k, size);
  return k;
}
inline std::string DelayedSlicesBegin() { return "L"; }
inline std::string DelayedSlicesEnd() { return "M"; }
// G<slice id><size>: a slice whose last reference went, written in the same
// transaction; its blocks are deleted by a background queue, which then
// removes the record. Whatever a crash leaves is finished by the next
// client (or `tessera gc`).
inline std::string FreedSlice(SliceId id, uint32_t size) {
  std::string k = "G";
  PutBig64(&k, id.value());
  PutBig32(&k, size);
  return k;
}
inline std::string FreedSlicesBegin() { return "G"; }
inline std::string FreedSlicesEnd() { return "H"; }
// R<ino>: a file whose last link went while no client of this volume held
// it open here; its keys and data are deleted in the background
// (meta_reclaim.cc).
inline std::string Reclaim(InodeId ino) {
  std::string k = "R";
  PutBig64(&k, ino.value());
  return k;
}
inline std::string ReclaimBegin() { return "R"; }
inline std::string ReclaimEnd() { return "S"; }
// C<name>: counters.
inline std::string Counter(std::string_view name) { return "C" + std::string(name); }
// SE<sid>: a session; SS<sid><ino>: a file the session holds open after unlink.
inline std::string Session(SessionId sid) {
  std::string k = "SE";
  PutBig64(&k, sid.value());
  return k;
}
inline std::string SessionsBegin() { return "SE"; }
inline std::string SessionsEnd() { return "SF"; }
inline std::string SustainedInode(SessionId sid, InodeId ino) {
  std::string k = "SS";
  PutBig64(&k, sid.value());
  PutBig64(&k, ino.value());
  return k;
}
// SL<sid><ino>: the session holds a flock or POSIX lock on the inode.
inline std::string SessionLock(SessionId sid, InodeId ino) {
  std::string k = "SL";
  PutBig64(&k, sid.value());
  PutBig64(&k, ino.value());
  return k;
}
// N<name>: a lease on a volume-wide background job (value: the holding
// session and the time it expires), so that one client runs it at a time.
inline std::string Lease(std::string_view name) { return "N" + std::string(name); }
// The volume settings.
inline std::string Settings() { return "setting"; }

// Counter names.
inline constexpr std::string_view kNextInode = "nextInode";
inline constexpr std::string_view kNextSlice = "nextSlice";
inline constexpr std::string_view kNextSession = "nextSession";
inline constexpr std::string_view kUsedSpace = "usedSpace";
inline constexpr std::string_view kUsedInodes = "usedInodes";

}  // namespace tessera::keys
