// Advisory file locks held in metadata, so that every client of a volume
// sees them: BSD flock (whole file, shared or exclusive) in `A<ino>F` and
// POSIX fcntl byte-range locks in `A<ino>P`. Each value is a small list of
// records keyed by (session, owner); `SL<sid><ino>` marks the inodes a
// session holds locks on, so that its locks can be dropped at unmount or by
// whoever cleans up after it when it dies. Every call is non-blocking: a
// conflict is kWouldBlock, and waiting is the caller's business (vfs/).
#include <fcntl.h>

#include <algorithm>

#include "common/coding.h"
#include "meta/keys.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr uint8_t kLockFormat = 1;

struct FlockRecord {
  uint64_t sid = 0;
  uint64_t owner = 0;
  uint8_t type = F_RDLCK;
};

struct RangeRecord {
  uint64_t sid = 0;
  uint64_t owner = 0;
  uint8_t type = F_RDLCK;
  uint32_t pid = 0;
  uint64_t start = 0;
  uint64_t end = 0;  // inclusive; UINT64_MAX: to the end of the file and beyond
};

bool ValidType(int type) { return type == F_RDLCK || type == F_WRLCK || type == F_UNLCK; }

// Two locks of different owners conflict when either of them is exclusive.
bool Incompatible(int a, int b) { return a == F_WRLCK || b == F_WRLCK; }

std::string EncodeFlocks(const std::vector<FlockRecord>& v) {
  std::string out(1, static_cast<char>(kLockFormat));
  for (const auto& r : v) {
    PutBig64(&out, r.sid);
    PutBig64(&out, r.owner);
    out.push_back(static_cast<char>(r.type));
  }
  return out;
}

Result<std::vector<FlockRecord>> DecodeFlocks(std::string_view data) {
  std::vector<FlockRecord> out;
  Decoder d(data);
  if (d.Byte() != kLockFormat || d.remaining() % 17 != 0) return Corrupt("bad flock record");
  while (d.remaining() > 0) {
    FlockRecord r;
    r.sid = d.Big64();
    r.owner = d.Big64();
    r.type = d.Byte();
    out.push_back(r);
  }
  return out;
}

std::string EncodeRanges(const std::vector<RangeRecord>& v) {
  std::string out(1, static_cast<char>(kLockFormat));
  for (const auto& r : v) {
    PutBig64(&out, r.sid);
    PutBig64(&out, r.owner);
    out.push_back(static_cast<char>(r.type));
    PutBig32(&out, r.pid);
    PutBig64(&out, r.start);
    PutBig64(&out, r.end);
  }
  return out;
}

Result<std::vector<RangeRecord>> DecodeRanges(std::string_view data) {
  std::vector<RangeRecord> out;
  Decoder d(data);
  if (d.Byte() != kLockFormat || d.remaining() % 37 != 0) return Corrupt("bad POSIX lock record");
  while (d.remaining() > 0) {
    RangeRecord r;
    r.sid = d.Big64();
    r.owner = d.Big64();
    r.type = d.Byte();
    r.pid = d.Big32();
    r.start = d.Big64();
    r.end = d.Big64();
    out.push_back(r);
  }
  return out;
}

template <typename T, typename Decode>
Status LoadRecords(KvTxn& txn, const std::string& key, Decode decode, std::vector<T>* out) {
  ASSIGN_OR_RETURN(auto value, txn.Get(key));
  out->clear();
  if (!value) return Status::Ok();
  ASSIGN_OR_RETURN(*out, decode(*value));
  return Status::Ok();
}

template <typename T, typename Encode>
void StoreRecords(KvTxn& txn, const std::string& key, Encode encode, const std::vector<T>& v) {
  if (v.empty()) {
    txn.Delete(key);
  } else {
    txn.Put(key, encode(v));
  }
}

template <typename T>
bool HasSession(const std::vector<T>& v, uint64_t sid) {
  return std::any_of(v.begin(), v.end(), [&](const T& r) { return r.sid == sid; });
}

// Keeps SL<sid><ino> present exactly while the session holds a lock of
// either kind on the inode. `holds_here` answers for the list just changed;
// the other kind's list (flocks when `other_is_flock`) is read only if needed.
Status SyncSessionIndex(KvTxn& txn, SessionId sid, InodeId ino, bool holds_here,
                        bool other_is_flock) {
  bool holds = holds_here;
  if (!holds) {
    if (other_is_flock) {
      std::vector<FlockRecord> other;
      RETURN_IF_ERROR(LoadRecords(txn, keys::Flocks(ino), DecodeFlocks, &other));
      holds = HasSession(other, sid.value());
    } else {
      std::vector<RangeRecord> other;
      RETURN_IF_ERROR(LoadRecords(txn, keys::PosixLocks(ino), DecodeRanges, &other));
      holds = HasSession(other, sid.value());
    }
  }
  const std::string key = keys::SessionLock(sid, ino);
  ASSIGN_OR_RETURN(auto marker, txn.Get(key));
  if (holds && !marker) txn.Put(key, "");
  if (!holds && marker) txn.Delete(key);
  return Status::Ok();
}

// Replaces what `mine` holds in [start, end] by `type` (F_UNLCK: nothing),
// splitting records that straddle the range and merging touching records of
// the same type, as POSIX says a process's locks behave.
std::vector<RangeRecord> Apply(std::vector<RangeRecord> mine, const RangeRecord& req) {
  std::vector<RangeRecord> out;
  for (const auto& r : mine) {
    if (r.end < req.start || r.start > req.end) {
      out.push_back(r);
      continue;
    }
    if (r.start < req.start) {
      RangeRecord left = r;
      left.end = req.start - 1;
      out.push_back(left);
    }
    if (r.end > req.end) {
      RangeRecord right = r;
      right.start = req.end + 1;
      out.push_back(right);
    }
  }
  if (req.type != F_UNLCK) out.push_back(req);
  std::sort(out.begin(), out.end(),
            [](const RangeRecord& a, const RangeRecord& b) { return a.start < b.start; });
  std::vector<RangeRecord> merged;
  for (const auto& r : out) {
    if (!merged.empty()) {
      RangeRecord& last = merged.back();
      // Records of one owner never overlap here, so "touching" is end + 1.
      if (last.type == r.type && last.end != UINT64_MAX && last.end + 1 == r.start) {
        last.end = r.end;
        last.pid = req.pid;
        continue;
      }
    }
    merged.push_back(r);
  }
  return merged;
}

}  // namespace

Status Meta::Flock(InodeId ino, uint64_t owner, int type) {
  if (!ValidType(type)) return Invalid("bad flock type " + std::to_string(type));
  const SessionId sid = session_;
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    const std::string key = keys::Flocks(ino);
    std::vector<FlockRecord> locks;
    RETURN_IF_ERROR(LoadRecords(txn, key, DecodeFlocks, &locks));
    auto mine = std::find_if(locks.begin(), locks.end(), [&](const FlockRecord& r) {
      return r.sid == sid.value() && r.owner == owner;
    });
    if (type == F_UNLCK) {
      if (mine == locks.end()) return Status::Ok();
      locks.erase(mine);
    } else {
      for (const auto& r : locks) {
        if ((r.sid != sid.value() || r.owner != owner) && Incompatible(r.type, type)) {
          return Status(StatusCode::kWouldBlock, "file is flock()ed by another owner");
        }
      }
      if (mine != locks.end() && mine->type == type) return Status::Ok();
      if (mine != locks.end()) {
        mine->type = static_cast<uint8_t>(type);
      } else {
        locks.push_back({sid.value(), owner, static_cast<uint8_t>(type)});
      }
    }
    StoreRecords(txn, key, EncodeFlocks, locks);
    return SyncSessionIndex(txn, sid, ino, HasSession(locks, sid.value()), false);
  });
}

Status Meta::SetLk(InodeId ino, uint64_t owner, uint32_t pid, int type, uint64_t start,
                   uint64_t end) {
  if (!ValidType(type)) return Invalid("bad lock type " + std::to_string(type));
  if (start > end) return Invalid("lock range ends before it starts");
  const SessionId sid = session_;
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    const std::string key = keys::PosixLocks(ino);
    std::vector<RangeRecord> locks;
    RETURN_IF_ERROR(LoadRecords(txn, key, DecodeRanges, &locks));
    std::vector<RangeRecord> mine, others;
    for (const auto& r : locks) {
      (r.sid == sid.value() && r.owner == owner ? mine : others).push_back(r);
    }
    if (type == F_UNLCK && mine.empty()) return Status::Ok();
    if (type != F_UNLCK) {
      for (const auto& r : others) {
        if (r.start <= end && start <= r.end && Incompatible(r.type, type)) {
          return Status(StatusCode::kWouldBlock, "range is locked by pid " + std::to_string(r.pid));
        }
      }
    }
    RangeRecord req{sid.value(), owner, static_cast<uint8_t>(type), pid, start, end};
    mine = Apply(std::move(mine), req);
    const bool holds = !mine.empty() || HasSession(others, sid.value());
    others.insert(others.end(), mine.begin(), mine.end());
    StoreRecords(txn, key, EncodeRanges, others);
    return SyncSessionIndex(txn, sid, ino, holds, true);
  });
}

Result<PosixLock> Meta::GetLk(InodeId ino, uint64_t owner, int type, uint64_t start,
                              uint64_t end) {
  if (!ValidType(type)) return Invalid("bad lock type " + std::to_string(type));
  if (start > end) return Invalid("lock range ends before it starts");
  PosixLock out;
  const SessionId sid = session_;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    out = PosixLock{};
    if (type == F_UNLCK) return Status::Ok();
    std::vector<RangeRecord> locks;
    RETURN_IF_ERROR(LoadRecords(txn, keys::PosixLocks(ino), DecodeRanges, &locks));
    for (const auto& r : locks) {
      if (r.sid == sid.value() && r.owner == owner) continue;
      if (r.start <= end && start <= r.end && Incompatible(r.type, type) &&
          (out.type == F_UNLCK || r.start < out.start)) {
        out = PosixLock{r.type, r.start, r.end, r.pid};
      }
    }
    return Status::Ok();
  }));
  return out;
}

Status Meta::ReleasePosixLocks(InodeId ino, uint64_t owner) {
  return SetLk(ino, owner, 0, F_UNLCK, 0, UINT64_MAX);
}

Status Meta::ReleaseSessionLocks(SessionId sid) {
  // One inode per transaction: a session may hold locks on many files.
  std::vector<InodeId> inodes;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    inodes.clear();
    const std::string begin = keys::SessionLock(sid, InodeId(0));
    const std::string end = keys::SessionLock(SessionId(sid.value() + 1), InodeId(0));
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(begin, end, 0));
    for (const auto& kv : page.items) {
      inodes.push_back(InodeId(GetBig64(kv.key.data() + kv.key.size() - 8)));
    }
    return Status::Ok();
  }));
  for (InodeId ino : inodes) {
    RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
      std::vector<FlockRecord> flocks;
      RETURN_IF_ERROR(LoadRecords(txn, keys::Flocks(ino), DecodeFlocks, &flocks));
      std::erase_if(flocks, [&](const FlockRecord& r) { return r.sid == sid.value(); });
      StoreRecords(txn, keys::Flocks(ino), EncodeFlocks, flocks);
      std::vector<RangeRecord> ranges;
      RETURN_IF_ERROR(LoadRecords(txn, keys::PosixLocks(ino), DecodeRanges, &ranges));
      std::erase_if(ranges, [&](const RangeRecord& r) { return r.sid == sid.value(); });
      StoreRecords(txn, keys::PosixLocks(ino), EncodeRanges, ranges);
      txn.Delete(keys::SessionLock(sid, ino));
      return Status::Ok();
    }));
  }
  return Status::Ok();
}

}  // namespace tessera
