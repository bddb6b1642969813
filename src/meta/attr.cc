#include "meta/attr.h"

#include "common/coding.h"

namespace tessera {
namespace {
constexpr uint8_t kAttrVersion = 1;
}  // namespace

std::string EncodeAttr(const Attr& a) {
  std::string out;
  out.reserve(61);
  out.push_back(static_cast<char>(kAttrVersion));
  PutBig32(&out, a.mode);
  PutBig32(&out, a.uid);
  PutBig32(&out, a.gid);
  PutBig64(&out, static_cast<uint64_t>(a.atime_ns));
  PutBig64(&out, static_cast<uint64_t>(a.mtime_ns));
  PutBig64(&out, static_cast<uint64_t>(a.ctime_ns));
  PutBig32(&out, a.nlink);
  PutBig64(&out, a.length);
  PutBig32(&out, a.rdev);
  PutBig64(&out, a.parent.value());
  return out;
}

Result<Attr> DecodeAttr(std::string_view data) {
  Decoder d(data);
  if (d.Byte() != kAttrVersion) return Corrupt("attribute record has an unknown version");
  Attr a;
  a.mode = d.Big32();
  a.uid = d.Big32();
  a.gid = d.Big32();
  a.atime_ns = static_cast<int64_t>(d.Big64());
  a.mtime_ns = static_cast<int64_t>(d.Big64());
  a.ctime_ns = static_cast<int64_t>(d.Big64());
  a.nlink = d.Big32();
  a.length = d.Big64();
  a.rdev = d.Big32();
  a.parent = InodeId(d.Big64());
  if (!d.ok()) return Corrupt("attribute record is truncated");
  return a;
}

std::string EncodeEntry(const DirEntryValue& e) {
  std::string out;
  PutBig32(&out, e.type);
  PutBig64(&out, e.inode.value());
  return out;
}

Result<DirEntryValue> DecodeEntry(std::string_view data) {
  Decoder d(data);
  DirEntryValue e;
  e.type = d.Big32();
  e.inode = InodeId(d.Big64());
  if (!d.ok()) return Corrupt("directory entry record is truncated");
  return e;
}

void AppendSliceRecord(std::string* chunk, const SliceRecord& s) {
  PutBig32(chunk, s.pos);
  PutBig64(chunk, s.id.value());
  PutBig32(chunk, s.size);
  PutBig32(chunk, s.off);
  PutBig32(chunk, s.len);
}

Result<std::vector<SliceRecord>> DecodeChunk(std::string_view data) {
  if (data.size() % kSliceRecordSize != 0) return Corrupt("chunk record has a partial slice");
  std::vector<SliceRecord> out;
  out.reserve(data.size() / kSliceRecordSize);
  Decoder d(data);
  while (d.remaining() > 0) {
    SliceRecord s;
    s.pos = d.Big32();
    s.id = SliceId(d.Big64());
    s.size = d.Big32();
    s.off = d.Big32();
    s.len = d.Big32();
    out.push_back(s);
  }
  return out;
}

}  // namespace tessera
