#include "meta/meta_dump.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <streambuf>
#include <string>
#include <vector>

#include "common/coding.h"
#include "meta/attr.h"
#include "meta/keys.h"

namespace tessera {
namespace {

// Ordered, so that settings keep their field order (their bytes are
// compared) and records come out in the order they are built.
using Json = nlohmann::ordered_json;

constexpr std::string_view kFormatName = "tessera-dump";

// ---- byte strings in JSON ----

// RFC 3629 UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): what
// the JSON parser accepts and the serializer writes without complaint.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t follow = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      follow = 1;
    } else if (c == 0xE0) {
      follow = 2, lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      follow = 2;
    } else if (c == 0xED) {
      follow = 2, hi = 0x9F;
    } else if (c == 0xF0) {
      follow = 3, lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      follow = 3;
    } else if (c == 0xF4) {
      follow = 3, hi = 0x8F;
    } else {
      return false;
    }
    if (s.size() - i - 1 < follow) return false;
    for (size_t k = 1; k <= follow; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += follow + 1;
  }
  return true;
}

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    const size_t n = std::min<size_t>(3, in.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? static_cast<uint8_t>(in[i + k]) : 0);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kBase64[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

// Standard base64 with padding; nullopt for anything else.
std::optional<std::string> FromBase64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t v = 0;
    size_t pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        pad++;
        v <<= 6;
        continue;
      }
      const char* p = c == '\0' || pad ? nullptr : std::strchr(kBase64, c);
      if (p == nullptr) return std::nullopt;
      v = (v << 6) | static_cast<uint32_t>(p - kBase64);
    }
    for (size_t k = 0; k < 3 - pad; ++k) out += static_cast<char>((v >> (16 - 8 * k)) & 0xff);
  }
  return out;
}

std::string Hex(std::string_view in) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(in.size() * 2);
  for (unsigned char c : in) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::optional<std::string> FromHex(std::string_view in) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (in.size() % 2 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 2);
  for (size_t i = 0; i < in.size(); i += 2) {
    const int hi = digit(in[i]), lo = digit(in[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

// Names, targets and values are arbitrary bytes: a JSON string when they
// are UTF-8, base64 in `field`_b64 otherwise.
void PutBytes(Json* j, const std::string& field, std::string_view bytes) {
  if (ValidUtf8(bytes)) {
    (*j)[field] = std::string(bytes);
  } else {
    (*j)[field + "_b64"] = Base64(bytes);
  }
}

// ---- reading the fields of a record ----

Status CheckFields(const Json& j, std::initializer_list<std::string_view> allowed) {
  if (!j.is_object()) return Invalid(std::string("expected an object, found ") + j.type_name());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      return Invalid("unknown field \"" + it.key() + "\"");
    }
  }
  return Status::Ok();
}

Result<uint64_t> Unsigned(const Json& j, const std::string& field,
                          uint64_t max = std::numeric_limits<uint64_t>::max()) {
  auto it = j.find(field);
  if (it == j.end()) return Invalid("field \"" + field + "\" is missing");
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    return Invalid("\"" + field + "\" must be a whole number from 0 to " + std::to_string(max));
  }
  return it->get<uint64_t>();
}

Result<uint32_t> Unsigned32(const Json& j, const std::string& field) {
  ASSIGN_OR_RETURN(uint64_t v, Unsigned(j, field, std::numeric_limits<uint32_t>::max()));
  return static_cast<uint32_t>(v);
}

Result<int64_t> Signed(const Json& j) {
  if (j.is_number_unsigned()) {
    if (j.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(j.get<uint64_t>());
    }
  } else if (j.is_number_integer()) {
    return j.get<int64_t>();
  }
  return Invalid("expected a whole number from -2^63 to 2^63-1");
}

Result<int64_t> Signed(const Json& j, const std::string& field) {
  auto it = j.find(field);
  if (it == j.end()) return Invalid("field \"" + field + "\" is missing");
  Result<int64_t> v = Signed(*it);
  if (!v.ok()) return Invalid("\"" + field + "\": " + v.status().message());
  return v;
}

// `field` (a UTF-8 string) or `field`_b64 (base64), exactly one of them.
Result<std::string> Bytes(const Json& j, const std::string& field) {
  auto plain = j.find(field);
  auto encoded = j.find(field + "_b64");
  if ((plain == j.end()) == (encoded == j.end())) {
    return Invalid("needs exactly one of \"" + field + "\" and \"" + field + "_b64\"");
  }
  if (plain != j.end()) {
    if (!plain->is_string()) return Invalid("\"" + field + "\" must be a string");
    return plain->get<std::string>();
  }
  std::optional<std::string> bytes;
  if (encoded->is_string()) bytes = FromBase64(encoded->get<std::string>());
  if (!bytes) return Invalid("\"" + field + "_b64\" must be a base64 string");
  return *bytes;
}

// ---- records: readable form and back ----

struct TypeName {
  uint32_t bits;
  const char* name;
};
constexpr TypeName kTypes[] = {{S_IFREG, "file"},     {S_IFDIR, "dir"},      {S_IFLNK, "symlink"},
                               {S_IFIFO, "fifo"},     {S_IFSOCK, "socket"},  {S_IFCHR, "chardev"},
                               {S_IFBLK, "blockdev"}};

const char* TypeWord(uint32_t bits) {
  for (const TypeName& t : kTypes) {
    if (t.bits == bits) return t.name;
  }
  return nullptr;
}

Result<uint32_t> TypeBits(const Json& j) {
  auto it = j.find("type");
  if (it == j.end()) return Invalid("field \"type\" is missing");
  if (it->is_string()) {
    for (const TypeName& t : kTypes) {
      if (*it == t.name) return t.bits;
    }
  }
  return Invalid("\"type\" must be one of file, dir, symlink, fifo, socket, chardev, blockdev");
}

// Where a record goes in the dump. Records of one inode are written inside
// its object; the others in top-level sections.
enum class Section {
  kNone,
  kInodes,      // top level: inode objects (and raw A keys too short for an inode)
  kAttr,        // per inode: "attr"
  kSymlink,     // per inode: "symlink"
  kTrashOrigin,  // per inode: "trash_origin"
  kChunks,      // per inode
  kEntries,     // per inode
  kXattrs,      // per inode
  kInodeOther,  // per inode: "other", raw keys
  kSliceRefs,
  kDelayed,
  kFreed,
  kPending,
  kOther,  // top level: raw keys
};

std::string_view InodeFieldName(Section s) {
  switch (s) {
    case Section::kChunks: return "chunks";
    case Section::kEntries: return "entries";
    case Section::kXattrs: return "xattrs";
    case Section::kInodeOther: return "other";
    default: return "";
  }
}

// Records under an inode that are one key of bytes, written as one field.
struct ByteField {
  char kind;
  const char* name;
  Section section;
  std::string (*key)(InodeId);
};
constexpr ByteField kByteFields[] = {
    {'S', "symlink", Section::kSymlink, keys::Symlink},
    {'T', "trash_origin", Section::kTrashOrigin, keys::TrashOrigin},
};

// The byte field of an object field name ("symlink" or "symlink_b64"...).
const ByteField* ByteFieldNamed(std::string_view field) {
  for (const ByteField& f : kByteFields) {
    const std::string name = f.name;
    if (field == name || field == name + "_b64") return &f;
  }
  return nullptr;
}

std::string Counter(int64_t v) {
  std::string s;
  PutBig64(&s, static_cast<uint64_t>(v));
  return s;
}

Json RawJson(const KeyValue& kv) {
  Json j = Json::object();
  j["key_hex"] = Hex(kv.key);
  j["value_b64"] = Base64(kv.value);
  return j;
}

Result<KeyValue> RawRecord(const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"key_hex", "value_b64"}));
  auto key = j.find("key_hex");
  auto value = j.find("value_b64");
  if (key == j.end() || value == j.end()) return Invalid("needs \"key_hex\" and \"value_b64\"");
  std::optional<std::string> k, v;
  if (key->is_string()) k = FromHex(key->get<std::string>());
  if (!k || k->empty()) return Invalid("\"key_hex\" must be a non-empty hex string");
  if (value->is_string()) v = FromBase64(value->get<std::string>());
  if (!v) return Invalid("\"value_b64\" must be a base64 string");
  return KeyValue{std::move(*k), std::move(*v)};
}

std::optional<Json> AttrJson(std::string_view value) {
  Result<Attr> a = DecodeAttr(value);
  if (!a.ok()) return std::nullopt;
  const char* type = TypeWord(a->mode & S_IFMT);
  if (type == nullptr) return std::nullopt;
  Json j = Json::object();
  j["type"] = type;
  j["mode"] = a->mode & ~static_cast<uint32_t>(S_IFMT);
  j["uid"] = a->uid;
  j["gid"] = a->gid;
  j["atime_ns"] = a->atime_ns;
  j["mtime_ns"] = a->mtime_ns;
  j["ctime_ns"] = a->ctime_ns;
  j["nlink"] = a->nlink;
  j["length"] = a->length;
  j["rdev"] = a->rdev;
  j["parent"] = a->parent.value();
  return j;
}

Result<std::string> AttrValue(const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"type", "mode", "uid", "gid", "atime_ns", "mtime_ns",
                                  "ctime_ns", "nlink", "length", "rdev", "parent"}));
  Attr a;
  ASSIGN_OR_RETURN(uint32_t type, TypeBits(j));
  ASSIGN_OR_RETURN(uint32_t mode, Unsigned32(j, "mode"));
  if ((mode & S_IFMT) != 0) return Invalid("\"mode\" must not hold file type bits");
  a.mode = type | mode;
  ASSIGN_OR_RETURN(a.uid, Unsigned32(j, "uid"));
  ASSIGN_OR_RETURN(a.gid, Unsigned32(j, "gid"));
  ASSIGN_OR_RETURN(a.atime_ns, Signed(j, "atime_ns"));
  ASSIGN_OR_RETURN(a.mtime_ns, Signed(j, "mtime_ns"));
  ASSIGN_OR_RETURN(a.ctime_ns, Signed(j, "ctime_ns"));
  ASSIGN_OR_RETURN(a.nlink, Unsigned32(j, "nlink"));
  ASSIGN_OR_RETURN(a.length, Unsigned(j, "length"));
  ASSIGN_OR_RETURN(a.rdev, Unsigned32(j, "rdev"));
  ASSIGN_OR_RETURN(uint64_t parent, Unsigned(j, "parent"));
  a.parent = InodeId(parent);
  return EncodeAttr(a);
}

// A<ino>C<index>: {"index":..,"slices":[{"pos","id","size","off","len"}...]}.
std::optional<Json> ChunkJson(const KeyValue& kv) {
  Result<std::vector<SliceRecord>> records = DecodeChunk(kv.value);
  if (!records.ok()) return std::nullopt;
  Json slices = Json::array();
  for (const SliceRecord& r : *records) {
    Json s = Json::object();
    s["pos"] = r.pos;
    s["id"] = r.id.value();
    s["size"] = r.size;
    s["off"] = r.off;
    s["len"] = r.len;
    slices.push_back(std::move(s));
  }
  Json j = Json::object();
  j["index"] = GetBig32(kv.key.data() + 10);
  j["slices"] = std::move(slices);
  return j;
}

Result<KeyValue> ChunkRecord(InodeId ino, const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"index", "slices"}));
  ASSIGN_OR_RETURN(uint32_t index, Unsigned32(j, "index"));
  auto slices = j.find("slices");
  if (slices == j.end() || !slices->is_array()) return Invalid("\"slices\" must be an array");
  std::string value;
  for (size_t i = 0; i < slices->size(); ++i) {
    const Json& s = (*slices)[i];
    auto record = [&]() -> Result<SliceRecord> {
      RETURN_IF_ERROR(CheckFields(s, {"pos", "id", "size", "off", "len"}));
      SliceRecord r;
      ASSIGN_OR_RETURN(r.pos, Unsigned32(s, "pos"));
      ASSIGN_OR_RETURN(uint64_t id, Unsigned(s, "id"));
      r.id = SliceId(id);
      ASSIGN_OR_RETURN(r.size, Unsigned32(s, "size"));
      ASSIGN_OR_RETURN(r.off, Unsigned32(s, "off"));
      ASSIGN_OR_RETURN(r.len, Unsigned32(s, "len"));
      return r;
    }();
    if (!record.ok()) {
      return Invalid("slices[" + std::to_string(i) + "]: " + record.status().message());
    }
    AppendSliceRecord(&value, *record);
  }
  return KeyValue{keys::Chunk(ino, index), std::move(value)};
}

// A<dir>D<hash><name>: {"name":..,"inode":..,"type":..}; the hash follows from the name.
std::optional<Json> EntryJson(const KeyValue& kv) {
  Result<DirEntryValue> e = DecodeEntry(kv.value);
  if (!e.ok()) return std::nullopt;
  const char* type = TypeWord(e->type);
  if (type == nullptr) return std::nullopt;
  Json j = Json::object();
  PutBytes(&j, "name", std::string_view(kv.key).substr(18));
  j["inode"] = e->inode.value();
  j["type"] = type;
  return j;
}

Result<KeyValue> EntryRecord(InodeId dir, const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"name", "name_b64", "inode", "type"}));
  ASSIGN_OR_RETURN(std::string name, Bytes(j, "name"));
  ASSIGN_OR_RETURN(uint64_t inode, Unsigned(j, "inode"));
  ASSIGN_OR_RETURN(uint32_t type, TypeBits(j));
  return KeyValue{keys::Entry(dir, name), EncodeEntry({type, InodeId(inode)})};
}

// A<ino>X<name>: {"name":..,"value":..} (or their _b64 forms).
std::optional<Json> XattrJson(const KeyValue& kv) {
  Json j = Json::object();
  PutBytes(&j, "name", std::string_view(kv.key).substr(10));
  PutBytes(&j, "value", kv.value);
  return j;
}

Result<KeyValue> XattrRecord(InodeId ino, const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"name", "name_b64", "value", "value_b64"}));
  ASSIGN_OR_RETURN(std::string name, Bytes(j, "name"));
  ASSIGN_OR_RETURN(std::string value, Bytes(j, "value"));
  return KeyValue{keys::Xattr(ino, name), std::move(value)};
}

// K<id><size> -> reference count: {"id","size","refs"}.
std::optional<Json> SliceRefJson(const KeyValue& kv) {
  if (kv.key.size() != 13 || kv.value.size() != 8) return std::nullopt;
  Json j = Json::object();
  j["id"] = GetBig64(kv.key.data() + 1);
  j["size"] = GetBig32(kv.key.data() + 9);
  j["refs"] = GetBig64(kv.value.data());
  return j;
}

Result<KeyValue> SliceRefRecord(const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"id", "size", "refs"}));
  ASSIGN_OR_RETURN(uint64_t id, Unsigned(j, "id"));
  ASSIGN_OR_RETURN(uint32_t size, Unsigned32(j, "size"));
  ASSIGN_OR_RETURN(uint64_t refs, Unsigned(j, "refs"));
  return KeyValue{keys::SliceRefs(SliceId(id), size), Counter(static_cast<int64_t>(refs))};
}

// L<due><id><size>, empty: {"due_ns","id","size"}.
std::optional<Json> DelayedJson(const KeyValue& kv) {
  if (kv.key.size() != 21 || !kv.value.empty()) return std::nullopt;
  Json j = Json::object();
  j["due_ns"] = static_cast<int64_t>(GetBig64(kv.key.data() + 1));
  j["id"] = GetBig64(kv.key.data() + 9);
  j["size"] = GetBig32(kv.key.data() + 17);
  return j;
}

Result<KeyValue> DelayedRecord(const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"due_ns", "id", "size"}));
  ASSIGN_OR_RETURN(int64_t due, Signed(j, "due_ns"));
  ASSIGN_OR_RETURN(uint64_t id, Unsigned(j, "id"));
  ASSIGN_OR_RETURN(uint32_t size, Unsigned32(j, "size"));
  return KeyValue{keys::DelayedSlice(due, SliceId(id), size), ""};
}

// G<id><size>, empty: {"id","size"}.
std::optional<Json> FreedJson(const KeyValue& kv) {
  if (kv.key.size() != 13 || !kv.value.empty()) return std::nullopt;
  Json j = Json::object();
  j["id"] = GetBig64(kv.key.data() + 1);
  j["size"] = GetBig32(kv.key.data() + 9);
  return j;
}

Result<KeyValue> FreedRecord(const Json& j) {
  RETURN_IF_ERROR(CheckFields(j, {"id", "size"}));
  ASSIGN_OR_RETURN(uint64_t id, Unsigned(j, "id"));
  ASSIGN_OR_RETURN(uint32_t size, Unsigned32(j, "size"));
  return KeyValue{keys::FreedSlice(SliceId(id), size), ""};
}

// R<ino>, empty: the inode number.
std::optional<Json> PendingJson(const KeyValue& kv) {
  if (kv.key.size() != 9 || !kv.value.empty()) return std::nullopt;
  return Json(GetBig64(kv.key.data() + 1));
}

Result<KeyValue> PendingRecord(const Json& j) {
  if (!j.is_number_unsigned()) return Invalid("expected an inode number");
  return KeyValue{keys::Reclaim(InodeId(j.get<uint64_t>())), ""};
}

// Any record of a section: raw ones ({"key_hex", "value_b64"}) may stand
// in any section (no readable record has a "key_hex" field).
Result<KeyValue> DecodeItem(Section s, InodeId ino, const Json& j) {
  if (j.is_object() && j.contains("key_hex")) return RawRecord(j);
  switch (s) {
    case Section::kAttr: {
      ASSIGN_OR_RETURN(std::string value, AttrValue(j));
      return KeyValue{keys::Attr(ino), std::move(value)};
    }
    case Section::kChunks: return ChunkRecord(ino, j);
    case Section::kEntries: return EntryRecord(ino, j);
    case Section::kXattrs: return XattrRecord(ino, j);
    case Section::kSliceRefs: return SliceRefRecord(j);
    case Section::kDelayed: return DelayedRecord(j);
    case Section::kFreed: return FreedRecord(j);
    case Section::kPending: return PendingRecord(j);
    default: return RawRecord(j);
  }
}

// The readable form of a record, when reading it back gives exactly the
// same key and value; nullopt otherwise (the record is then written raw).
// Checking each record this way is what makes the dump lossless whatever
// a record holds (a newer attribute version, trailing bytes, a name whose
// hash does not match).
std::optional<Json> Readable(Section s, InodeId ino, const KeyValue& kv,
                             const std::optional<Json>& j) {
  if (!j) return std::nullopt;
  Result<KeyValue> back = DecodeItem(s, ino, *j);
  if (!back.ok() || back->key != kv.key || back->value != kv.value) return std::nullopt;
  return j;
}

// ---- dump ----

// Writes one attempt of a dump from one read transaction.
class Dumper {
 public:
  Dumper(KvTxn& txn, std::ostream& out, size_t page_size, std::string url, DumpStats* stats)
      : txn_(txn), out_(out), page_size_(std::max<size_t>(page_size, 1)), url_(std::move(url)),
        stats_(*stats) {}

  Status Run();

 private:
  // Visits [from, end) in pages of this transaction; `page_` and `pos_`
  // tell `fn` where it is.
  Status ForEach(std::string from, const std::string& end,
                 const std::function<Status(const KeyValue&)>& fn);
  void Write(std::string_view s) { out_.write(s.data(), static_cast<std::streamsize>(s.size())); }
  void BeginArray(std::string_view name);
  void Item(const std::string& json);
  void NextItem();
  void EndArray(bool last);
  void Raw(const KeyValue& kv) {
    Item(RawJson(kv).dump());
    stats_.raw++;
  }

  Status Counters();
  Status Inodes();
  Status InodeKey(const KeyValue& kv);
  Status OpenInode();
  void InodeItem(Section s, const Json& j);
  void ByteFieldItem(const ByteField& f, std::string_view bytes);
  void CloseInode();
  Status Records(std::string_view name, const char* begin, const char* end, Section s,
                 std::optional<Json> (*readable)(const KeyValue&));
  Status PendingDeletions();
  Status Others(bool settings_readable);

  KvTxn& txn_;
  std::ostream& out_;
  const size_t page_size_;
  const std::string url_;
  DumpStats& stats_;
  const ScanResult* page_ = nullptr;
  size_t pos_ = 0;
  bool first_item_ = true;

  // The inode whose object is being written.
  struct InodeState {
    bool started = false;       // a key of it was seen
    bool open = false;          // its object is written up to the current section
    bool attr_written = false;  // its attributes are in the object already
    uint64_t ino = 0;
    Section section = Section::kNone;  // the array open in the object
    uint32_t used = 0;                 // bits of the sections the object holds
  } inode_;
};

Status Dumper::ForEach(std::string from, const std::string& end,
                       const std::function<Status(const KeyValue&)>& fn) {
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn_.Scan(from, end, page_size_));
    page_ = &page;
    for (pos_ = 0; pos_ < page.items.size(); ++pos_) RETURN_IF_ERROR(fn(page.items[pos_]));
    page_ = nullptr;
    if (!out_) return IoError("writing the dump failed");
    if (!page.more || page.items.empty()) return Status::Ok();
    from = page.items.back().key + '\0';
  }
}

void Dumper::BeginArray(std::string_view name) {
  Write("\"");
  Write(name);
  Write("\":[");
  first_item_ = true;
}

void Dumper::NextItem() {
  Write(first_item_ ? "\n" : ",\n");
  first_item_ = false;
}

void Dumper::Item(const std::string& json) {
  NextItem();
  Write(json);
  stats_.keys++;
}

void Dumper::EndArray(bool last) {
  Write(first_item_ ? "]" : "\n]");
  Write(last ? "\n" : ",\n");
}

// C<name> with an 8-byte value and a UTF-8 name, in one object on one line.
Status Dumper::Counters() {
  Write("\"counters\":{");
  bool first = true;
  RETURN_IF_ERROR(ForEach("C", "D", [&](const KeyValue& kv) -> Status {
    const std::string_view name = std::string_view(kv.key).substr(1);
    if (kv.value.size() != 8 || !ValidUtf8(name)) return Status::Ok();  // written raw in "other"
    Write(first ? "" : ",");
    Write(Json(std::string(name)).dump());
    Write(":");
    Write(std::to_string(static_cast<int64_t>(GetBig64(kv.value.data()))));
    first = false;
    stats_.keys++;
    return Status::Ok();
  }));
  Write("},\n");
  return Status::Ok();
}

Status Dumper::Inodes() {
  BeginArray("inodes");
  RETURN_IF_ERROR(ForEach("A", "B", [&](const KeyValue& kv) { return InodeKey(kv); }));
  CloseInode();
  EndArray(false);
  return Status::Ok();
}

Status Dumper::InodeKey(const KeyValue& kv) {
  if (kv.key.size() < 10) {  // no inode number and kind: not a key of an inode
    CloseInode();
    inode_ = {};
    Raw(kv);
    return Status::Ok();
  }
  const uint64_t ino = GetBig64(kv.key.data() + 1);
  if (!inode_.started || inode_.ino != ino) {
    CloseInode();
    inode_ = {};
    inode_.started = true;
    inode_.ino = ino;
  }
  const char kind = kv.key[9];
  const bool exact = kv.key.size() == 10;
  // Lock records belong to live sessions.
  if (exact && (kind == 'F' || kind == 'P')) return Status::Ok();
  if (!inode_.open) RETURN_IF_ERROR(OpenInode());
  const InodeId id(ino);
  std::optional<Json> j;
  Section section = Section::kNone;
  switch (kind) {
    case 'I':
      if (exact && inode_.attr_written) return Status::Ok();  // written first
      break;
    case 'C':
      if (kv.key.size() == 14) j = Readable(section = Section::kChunks, id, kv, ChunkJson(kv));
      break;
    case 'D':
      if (kv.key.size() >= 18) j = Readable(section = Section::kEntries, id, kv, EntryJson(kv));
      break;
    case 'S':
    case 'T':
      if (exact) {
        ByteFieldItem(kind == 'S' ? kByteFields[0] : kByteFields[1], kv.value);
        return Status::Ok();
      }
      break;
    case 'X': j = Readable(section = Section::kXattrs, id, kv, XattrJson(kv)); break;
    default: break;
  }
  if (j) {
    InodeItem(section, *j);
  } else {
    InodeItem(Section::kInodeOther, RawJson(kv));
    stats_.raw++;
  }
  return Status::Ok();
}

// Starts the object of an inode with its attributes, which come after its
// chunks and entries in key order: in the page at hand unless the inode
// runs past it, and read then.
Status Dumper::OpenInode() {
  const std::string attr_key = keys::Attr(InodeId(inode_.ino));
  std::optional<std::string> value;
  auto begin = page_->items.begin() + static_cast<ptrdiff_t>(pos_);
  auto it = std::lower_bound(begin, page_->items.end(), attr_key,
                             [](const KeyValue& kv, const std::string& k) { return kv.key < k; });
  if (it != page_->items.end()) {
    if (it->key == attr_key) value = it->value;
  } else if (page_->more) {
    ASSIGN_OR_RETURN(value, txn_.Get(attr_key));
  }
  NextItem();
  Write("{\"inode\":" + std::to_string(inode_.ino));
  inode_.open = true;
  if (value) {
    const KeyValue attr{attr_key, *value};
    if (auto j = Readable(Section::kAttr, InodeId(inode_.ino), attr, AttrJson(*value))) {
      Write(",\"attr\":" + j->dump());
      inode_.attr_written = true;
      stats_.keys++;
      stats_.inodes++;
    }
  }
  return Status::Ok();
}

// Appends to the array of section `s` in the inode's object. Keys come in
// key order, so a section's records are adjacent, except raw ones, which
// may sit between others: a section that was closed already is continued
// in a new object for the same inode.
void Dumper::InodeItem(Section s, const Json& j) {
  const uint32_t bit = 1u << static_cast<int>(s);
  if (inode_.section == s) {
    Write(",");
  } else {
    if (inode_.section != Section::kNone) Write("]");
    if (inode_.used & bit) {
      Write("},\n{\"inode\":" + std::to_string(inode_.ino));
      inode_.used = 0;
    }
    Write(",\"");
    Write(InodeFieldName(s));
    Write("\":[");
    inode_.used |= bit;
    inode_.section = s;
  }
  Write(j.dump());
  stats_.keys++;
}

void Dumper::ByteFieldItem(const ByteField& f, std::string_view bytes) {
  if (inode_.section != Section::kNone) Write("]");
  inode_.section = Section::kNone;
  Json j = Json::object();
  PutBytes(&j, f.name, bytes);
  const std::string field = j.begin().key();
  Write(",\"" + field + "\":" + j.begin().value().dump());
  inode_.used |= 1u << static_cast<int>(f.section);
  stats_.keys++;
}

void Dumper::CloseInode() {
  if (!inode_.open) return;
  if (inode_.section != Section::kNone) Write("]");
  Write("}");
  inode_.open = false;
  inode_.section = Section::kNone;
}

Status Dumper::Records(std::string_view name, const char* begin, const char* end, Section s,
                       std::optional<Json> (*readable)(const KeyValue&)) {
  BeginArray(name);
  RETURN_IF_ERROR(ForEach(begin, end, [&](const KeyValue& kv) -> Status {
    if (auto j = Readable(s, InodeId(), kv, readable(kv))) {
      Item(j->dump());
    } else {
      Raw(kv);
    }
    return Status::Ok();
  }));
  EndArray(false);
  return Status::Ok();
}

// R<ino> records, and the files that sessions hold open after their last
// unlink (SS<sid><ino>), which no session holds after a load: one sorted
// list, as R records are after the load.
Status Dumper::PendingDeletions() {
  std::set<uint64_t> held;
  RETURN_IF_ERROR(ForEach("SS", "ST", [&](const KeyValue& kv) -> Status {
    if (kv.key.size() == 18) held.insert(GetBig64(kv.key.data() + 10));
    return Status::Ok();
  }));
  BeginArray("pending_deletions");
  auto next = held.begin();
  // The held files that sort before `key` (all when it is empty).
  auto held_before = [&](const std::string& key) {
    for (; next != held.end(); ++next) {
      const std::string r = keys::Reclaim(InodeId(*next));
      if (!key.empty() && r >= key) {
        if (r == key) ++next;  // the R record stands for it
        return;
      }
      Item(std::to_string(*next));
    }
  };
  RETURN_IF_ERROR(ForEach("R", "S", [&](const KeyValue& kv) -> Status {
    held_before(kv.key);
    if (auto j = Readable(Section::kPending, InodeId(), kv, PendingJson(kv))) {
      Item(j->dump());
    } else {
      Raw(kv);
    }
    return Status::Ok();
  }));
  held_before("");
  EndArray(false);
  return Status::Ok();
}

// Every key no section above holds, in key order: the ranges between the
// sections, counters and SS keys of an unknown shape, and settings that are
// not a JSON object.
Status Dumper::Others(bool settings_readable) {
  const std::string settings_end = keys::Settings() + '\0';
  enum class Only { kAll, kCounters, kSessionFiles, kSettings };
  const struct {
    std::string begin, end;
    Only only;
  } ranges[] = {
      {"", "A", Only::kAll},
      {"B", "C", Only::kAll},
      {"C", "D", Only::kCounters},
      {"D", "G", Only::kAll},
      {"H", "K", Only::kAll},
      {"M", "N", Only::kAll},
      // N: leases of background jobs (sessions' state), left out.
      {"O", "R", Only::kAll},
      {"S", "SE", Only::kAll},
      // SE: sessions, left out.
      {"SF", "SL", Only::kAll},
      // SL: session lock markers, left out.
      {"SM", "SS", Only::kAll},
      {"SS", "ST", Only::kSessionFiles},
      {"ST", keys::Settings(), Only::kAll},
      {keys::Settings(), settings_end, Only::kSettings},
      {settings_end, "", Only::kAll},
  };
  BeginArray("other");
  for (const auto& range : ranges) {
    RETURN_IF_ERROR(ForEach(range.begin, range.end, [&](const KeyValue& kv) -> Status {
      switch (range.only) {
        case Only::kCounters:
          if (kv.value.size() == 8 && ValidUtf8(std::string_view(kv.key).substr(1))) {
            return Status::Ok();
          }
          break;
        case Only::kSessionFiles:
          if (kv.key.size() == 18) return Status::Ok();
          break;
        case Only::kSettings:
          if (settings_readable) return Status::Ok();
          break;
        case Only::kAll: break;
      }
      Raw(kv);
      return Status::Ok();
    }));
  }
  EndArray(true);
  return Status::Ok();
}

// Settings written as the JSON object they are, when that object prints
// back to exactly the stored bytes.
std::optional<Json> SettingsJson(const std::string& stored) {
  Json j = Json::parse(stored, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.dump() != stored) return std::nullopt;
  return j;
}

Status Dumper::Run() {
  ASSIGN_OR_RETURN(std::optional<std::string> settings, txn_.Get(keys::Settings()));
  if (!settings) return NotFound("no volume is formatted in " + url_);
  Write("{\"format\":\"" + std::string(kFormatName) +
        "\",\"version\":" + std::to_string(kDumpFormatVersion) + ",\n");
  const std::optional<Json> readable = SettingsJson(*settings);
  if (readable) {
    Write("\"settings\":" + readable->dump() + ",\n");
    stats_.keys++;
  }
  RETURN_IF_ERROR(Counters());
  RETURN_IF_ERROR(Inodes());
  RETURN_IF_ERROR(Records("slice_refs", "K", "L", Section::kSliceRefs, SliceRefJson));
  RETURN_IF_ERROR(Records("delayed_slices", "L", "M", Section::kDelayed, DelayedJson));
  RETURN_IF_ERROR(Records("freed_slices", "G", "H", Section::kFreed, FreedJson));
  RETURN_IF_ERROR(PendingDeletions());
  RETURN_IF_ERROR(Others(readable.has_value()));
  Write("}\n");
  out_.flush();
  if (!out_) return IoError("writing the dump failed");
  return Status::Ok();
}

Status DumpOnce(KvStore& kv, std::ostream& out, const DumpOptions& options, DumpStats* stats) {
  ASSIGN_OR_RETURN(std::unique_ptr<KvTxn> txn, kv.Begin());
  Dumper dumper(*txn, out, options.page_size, kv.Url(), stats);
  RETURN_IF_ERROR(dumper.Run());
  // Nothing is written; an engine that checks what was read at commit
  // tells here whether the snapshot held.
  return txn->Commit();
}

// ---- load ----

// Counts the lines of what the parser has consumed, for error messages.
class LineCountingBuf final : public std::streambuf {
 public:
  explicit LineCountingBuf(std::streambuf* source) : source_(source), buf_(1 << 16) {}
  uint64_t Line() const {
    return 1 + lines_ + static_cast<uint64_t>(std::count(eback(), gptr(), '\n'));
  }
  // Whether the source has nothing more to give, and how much it gave.
  bool AtEnd() const { return ended_ && gptr() == egptr(); }
  uint64_t total() const { return total_; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    lines_ += static_cast<uint64_t>(std::count(eback(), egptr(), '\n'));
    const auto n = source_->sgetn(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    setg(buf_.data(), buf_.data(), buf_.data() + std::max<std::streamsize>(n, 0));
    ended_ = n <= 0;
    total_ += static_cast<uint64_t>(std::max<std::streamsize>(n, 0));
    return n > 0 ? traits_type::to_int_type(buf_[0]) : traits_type::eof();
  }

 private:
  std::streambuf* source_;
  std::vector<char> buf_;
  uint64_t lines_ = 0;
  uint64_t total_ = 0;
  bool ended_ = false;
};

// Where loaded keys go: transactions of bounded size, or nowhere (CheckDump).
class Sink {
 public:
  Sink(KvStore* kv, const LoadOptions& options, LoadStats* stats)
      : kv_(kv), options_(options), stats_(*stats) {}

  Status Add(KeyValue kv) {
    stats_.keys++;
    if (kv_ == nullptr) return Status::Ok();
    bytes_ += kv.key.size() + kv.value.size();
    batch_.push_back(std::move(kv));
    const bool full = batch_.size() >= std::max<size_t>(options_.batch_keys, 1) ||
                      bytes_ >= options_.batch_bytes;
    return full ? Flush() : Status::Ok();
  }
  // Kept for the last transaction: a volume is mountable only once whole.
  void SetSettings(std::string value) { settings_ = std::move(value); }
  Status Finish() {
    if (settings_) {
      RETURN_IF_ERROR(Add({keys::Settings(), std::move(*settings_)}));
      settings_.reset();
    }
    return Flush();
  }

 private:
  Status Flush() {
    if (batch_.empty()) return Status::Ok();
    RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
      for (const KeyValue& kv : batch_) txn.Put(kv.key, kv.value);
      return Status::Ok();
    }));
    stats_.transactions++;
    batch_.clear();
    bytes_ = 0;
    return Status::Ok();
  }

  KvStore* kv_;
  const LoadOptions options_;
  LoadStats& stats_;
  std::vector<KeyValue> batch_;
  size_t bytes_ = 0;
  std::optional<std::string> settings_;
};

// Builds one record (a value of bounded size) from parser events.
class RecordBuilder {
 public:
  bool done() const { return done_; }
  Json Take() { return std::move(root_); }
  void Scalar(Json v) {
    Insert(std::move(v));
    done_ = stack_.empty();
  }
  void StartObject() { stack_.push_back(Insert(Json::object())); }
  void StartArray() { stack_.push_back(Insert(Json::array())); }
  void End() {
    stack_.pop_back();
    done_ = stack_.empty();
  }
  void Key(std::string key) { key_ = std::move(key); }

 private:
  // Only the innermost open container grows, so the pointers to the open
  // ones stay valid.
  Json* Insert(Json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    Json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }

  Json root_;
  std::vector<Json*> stack_;
  std::string key_;
  bool done_ = false;
};

constexpr std::string_view kTopFields[] = {"format",     "version",        "settings",
                                           "counters",   "inodes",         "slice_refs",
                                           "delayed_slices", "freed_slices", "pending_deletions",
                                           "other"};

Section TopSection(std::string_view field) {
  if (field == "inodes") return Section::kInodes;
  if (field == "slice_refs") return Section::kSliceRefs;
  if (field == "delayed_slices") return Section::kDelayed;
  if (field == "freed_slices") return Section::kFreed;
  if (field == "pending_deletions") return Section::kPending;
  if (field == "other") return Section::kOther;
  return Section::kNone;
}

Section InodeSection(std::string_view field) {
  if (field == "chunks") return Section::kChunks;
  if (field == "entries") return Section::kEntries;
  if (field == "xattrs") return Section::kXattrs;
  if (field == "other") return Section::kInodeOther;
  return Section::kNone;
}

// Reads a dump from parser events, streaming: the containers that may be
// huge (the sections, each inode's arrays) are walked event by event, and
// only the records inside them are built in memory, one at a time.
class LoadHandler final : public nlohmann::json_sax<Json> {
 public:
  LoadHandler(Sink& sink, LoadStats& stats, const LineCountingBuf& lines)
      : sink_(sink), stats_(stats), lines_(lines) {}

  const Status& error() const { return error_; }
  // After the parser accepted the whole input.
  Status Finish() {
    if (!version_seen_) {
      return Invalid("not a tessera dump: \"format\" and \"version\" are missing");
    }
    return sink_.Finish();
  }

  bool null() override { return Scalar(Json(nullptr)); }
  bool boolean(bool v) override { return Scalar(Json(v)); }
  bool number_integer(number_integer_t v) override { return Scalar(Json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return Scalar(Json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return Scalar(Json(v)); }
  bool string(string_t& v) override { return Scalar(Json(std::move(v))); }
  bool binary(binary_t&) override { return Fail(Invalid(Where() + ": unexpected binary value")); }
  bool start_object(std::size_t) override;
  bool end_object() override;
  bool start_array(std::size_t) override;
  bool end_array() override;
  bool key(string_t& k) override;
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override;

 private:
  enum class Frame { kTop, kCounters, kSection, kInode, kInodeSection };
  struct Level {
    Frame frame = Frame::kTop;
    Section section = Section::kNone;
    std::string field;  // objects: the field whose value is being read
    uint64_t index = 0;  // arrays: the item being read
  };
  void Push(Frame frame, Section section = Section::kNone) {
    Level l;
    l.frame = frame;
    l.section = section;
    stack_.push_back(std::move(l));
  }
  // What the next value is, from where the parser is.
  enum class Expect { kDocument, kRecord, kCounters, kSection, kInode, kInodeSection };

  Expect Next() const;
  bool Scalar(Json v);
  bool Record(const Json& j);
  bool RecordDone();
  bool ValueDone();
  bool Add(Result<KeyValue> kv);
  bool Fail(Status st) {
    error_ = std::move(st);
    return false;
  }
  bool NotADocument() {
    return Fail(Invalid("not a tessera dump: the input is not a JSON object"));
  }
  bool Mismatch(const char* expected) {
    return Fail(Invalid(Where() + ": expected " + expected));
  }
  std::string Where() const;

  Sink& sink_;
  LoadStats& stats_;
  const LineCountingBuf& lines_;
  Status error_;
  std::vector<Level> stack_;
  std::optional<RecordBuilder> record_;
  std::set<std::string> top_fields_;
  bool started_ = false;  // the document's object began
  bool format_seen_ = false, version_seen_ = false;
  std::optional<uint64_t> inode_;  // the inode whose object is being read
};

LoadHandler::Expect LoadHandler::Next() const {
  if (stack_.empty()) return Expect::kDocument;
  const Level& l = stack_.back();
  switch (l.frame) {
    case Frame::kTop:
      if (l.field == "counters") return Expect::kCounters;
      return TopSection(l.field) != Section::kNone ? Expect::kSection : Expect::kRecord;
    case Frame::kSection:
      return l.section == Section::kInodes ? Expect::kInode : Expect::kRecord;
    case Frame::kInode:
      return InodeSection(l.field) != Section::kNone ? Expect::kInodeSection : Expect::kRecord;
    case Frame::kCounters:
    case Frame::kInodeSection: return Expect::kRecord;
  }
  return Expect::kRecord;
}

std::string LoadHandler::Where() const {
  std::string path;
  for (const Level& l : stack_) {
    switch (l.frame) {
      case Frame::kTop: path += l.field; break;
      case Frame::kCounters:
        if (!l.field.empty()) path += "." + l.field;
        break;
      case Frame::kSection:
      case Frame::kInodeSection: path += "[" + std::to_string(l.index) + "]"; break;
      case Frame::kInode:
        if (inode_) path += " (inode " + std::to_string(*inode_) + ")";
        if (!l.field.empty()) path += "." + l.field;
        break;
    }
  }
  return "line " + std::to_string(lines_.Line()) + (path.empty() ? "" : ": " + path);
}

bool LoadHandler::start_object(std::size_t) {
  if (record_) {
    record_->StartObject();
    return true;
  }
  switch (Next()) {
    case Expect::kDocument:
      if (started_) return Fail(Invalid("not valid JSON: more after the end of the document"));
      started_ = true;
      Push(Frame::kTop);
      return true;
    case Expect::kCounters: Push(Frame::kCounters); return true;
    case Expect::kInode:
      Push(Frame::kInode);
      inode_.reset();
      return true;
    case Expect::kRecord:
      record_.emplace();
      record_->StartObject();
      return true;
    case Expect::kSection:
    case Expect::kInodeSection: return Mismatch("an array");
  }
  return true;
}

bool LoadHandler::start_array(std::size_t) {
  if (record_) {
    record_->StartArray();
    return true;
  }
  switch (Next()) {
    case Expect::kDocument: return NotADocument();
    case Expect::kSection:
      Push(Frame::kSection, TopSection(stack_.back().field));
      return true;
    case Expect::kInodeSection:
      Push(Frame::kInodeSection, InodeSection(stack_.back().field));
      return true;
    case Expect::kRecord:
      record_.emplace();
      record_->StartArray();
      return true;
    case Expect::kCounters:
    case Expect::kInode: return Mismatch("an object");
  }
  return true;
}

bool LoadHandler::end_object() {
  if (record_) {
    record_->End();
    return RecordDone();
  }
  const Level done = std::move(stack_.back());
  stack_.pop_back();
  if (done.frame == Frame::kInode) inode_.reset();
  return stack_.empty() || ValueDone();
}

bool LoadHandler::end_array() {
  if (record_) {
    record_->End();
    return RecordDone();
  }
  stack_.pop_back();
  return ValueDone();
}

bool LoadHandler::key(string_t& k) {
  if (record_) {
    record_->Key(std::move(k));
    return true;
  }
  Level& l = stack_.back();
  if (l.frame == Frame::kTop) {
    if (!format_seen_ && k != "format") {
      return Fail(Invalid("not a tessera dump: it does not start with \"format\":\"" +
                          std::string(kFormatName) + "\""));
    }
    if (format_seen_ && !version_seen_ && k != "version") {
      return Fail(Invalid("not a tessera dump: \"version\" does not follow \"format\""));
    }
    if (std::find(std::begin(kTopFields), std::end(kTopFields), k) == std::end(kTopFields)) {
      return Fail(Invalid(Where() + ": unknown field \"" + k + "\""));
    }
    if (!top_fields_.insert(k).second) {
      return Fail(Invalid(Where() + ": \"" + k + "\" appears twice"));
    }
  } else if (l.frame == Frame::kInode) {
    if (!inode_) {
      if (k == "key_hex" || k == "value_b64") {
        // Not an inode: a raw key of the A range too short to name one.
        stack_.pop_back();
        record_.emplace();
        record_->StartObject();
        record_->Key(std::move(k));
        return true;
      }
      if (k != "inode") return Fail(Invalid(Where() + ": the first field must be \"inode\""));
    } else if (k == "inode") {
      return Fail(Invalid(Where() + ": \"inode\" appears twice"));
    } else if (k != "attr" && ByteFieldNamed(k) == nullptr &&
               InodeSection(k) == Section::kNone) {
      return Fail(Invalid(Where() + ": unknown field \"" + k + "\""));
    }
  }
  l.field = std::move(k);
  return true;
}

bool LoadHandler::parse_error(std::size_t, const std::string&,
                              const nlohmann::detail::exception& e) {
  std::string what = e.what();
  // "[json.exception.parse_error.101] parse error at line 3, column 1: ..."
  const size_t bracket = what.find("] ");
  if (what.rfind("[json.exception", 0) == 0 && bracket != std::string::npos) {
    what = what.substr(bracket + 2);
  }
  if (lines_.total() == 0) return Fail(Invalid("the dump is empty"));
  // Input that ran out before the document was whole, whatever token it
  // ran out in (a string, a literal, between tokens).
  if (lines_.AtEnd() && (!stack_.empty() || !started_)) {
    return Fail(Invalid("the dump ends early (truncated?): " + what));
  }
  return Fail(Invalid("not valid JSON: " + what));
}

bool LoadHandler::Scalar(Json v) {
  if (record_) {
    record_->Scalar(std::move(v));
    return RecordDone();
  }
  switch (Next()) {
    case Expect::kRecord: return Record(v) && ValueDone();
    case Expect::kDocument: return NotADocument();
    case Expect::kCounters:
    case Expect::kInode: return Mismatch("an object");
    case Expect::kSection:
    case Expect::kInodeSection: return Mismatch("an array");
  }
  return true;
}

bool LoadHandler::RecordDone() {
  if (!record_->done()) return true;
  const Json j = record_->Take();
  record_.reset();
  return Record(j) && ValueDone();
}

// After a value: the object waits for its next field, the array for its
// next item.
bool LoadHandler::ValueDone() {
  Level& l = stack_.back();
  if (l.frame == Frame::kSection || l.frame == Frame::kInodeSection) {
    l.index++;
  } else {
    l.field.clear();
  }
  return true;
}

bool LoadHandler::Add(Result<KeyValue> kv) {
  if (!kv.ok()) return Fail(Status(kv.status().code(), Where() + ": " + kv.status().message()));
  Status st = sink_.Add(std::move(*kv));
  if (!st.ok()) return Fail(std::move(st));
  return true;
}

bool LoadHandler::Record(const Json& j) {
  const Level& l = stack_.back();
  switch (l.frame) {
    case Frame::kTop:
      if (l.field == "format") {
        if (!j.is_string() || j.get<std::string>() != kFormatName) {
          return Fail(Invalid("not a tessera dump: \"format\" is " + j.dump() + ", expected \"" +
                              std::string(kFormatName) + "\""));
        }
        format_seen_ = true;
      } else if (l.field == "version") {
        if (!j.is_number_unsigned() || j.get<uint64_t>() != kDumpFormatVersion) {
          return Fail(Status(StatusCode::kNotSupported,
                             "dump format version " + j.dump() + " is not supported (this tessera "
                             "reads version " + std::to_string(kDumpFormatVersion) + ")"));
        }
        version_seen_ = true;
      } else if (l.field == "settings") {
        if (!j.is_object()) return Mismatch("an object");
        sink_.SetSettings(j.dump());
      }
      return true;
    case Frame::kCounters: {
      Result<int64_t> v = Signed(j);
      if (!v.ok()) return Fail(Invalid(Where() + ": " + v.status().message()));
      return Add(KeyValue{keys::Counter(l.field), Counter(*v)});
    }
    case Frame::kSection: return Add(DecodeItem(l.section, InodeId(), j));
    case Frame::kInodeSection: return Add(DecodeItem(l.section, InodeId(*inode_), j));
    case Frame::kInode:
      if (l.field == "inode") {
        if (!j.is_number_unsigned()) return Mismatch("an inode number");
        inode_ = j.get<uint64_t>();
        return true;
      }
      if (l.field == "attr") {
        stats_.inodes++;
        return Add(DecodeItem(Section::kAttr, InodeId(*inode_), j));
      }
      // A byte field: "symlink", "trash_origin" or their _b64 forms.
      const ByteField* f = ByteFieldNamed(l.field);
      Json wrapped = Json::object();
      wrapped[l.field] = j;
      Result<std::string> bytes = Bytes(wrapped, f->name);
      if (!bytes.ok()) return Add(bytes.status());
      return Add(KeyValue{f->key(InodeId(*inode_)), std::move(*bytes)});
  }
  return true;
}

Status Load(KvStore* kv, std::istream& in, const LoadOptions& options, LoadStats* stats) {
  LoadStats local;
  Sink sink(kv, options, &local);
  LineCountingBuf lines(in.rdbuf());
  std::istream counted(&lines);
  LoadHandler handler(sink, local, lines);
  Status st;
  try {
    const bool parsed =
        Json::sax_parse(counted, &handler, Json::input_format_t::json, /*strict=*/true);
    st = parsed ? handler.Finish() : handler.error();
    if (!parsed && st.ok()) st = Invalid("not valid JSON");
  } catch (const nlohmann::json::exception& e) {
    // Not expected (records are checked field by field), but bad input
    // must never end the process.
    st = Invalid("line " + std::to_string(lines.Line()) + ": " + e.what());
  }
  if (stats) *stats = local;
  return st;
}

}  // namespace

Status DumpVolume(KvStore& kv, std::ostream& out, const DumpOptions& options, DumpStats* stats) {
  const int attempts = 1 + std::max(options.max_restarts, 0);
  Status last;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) {
      if (!options.restart) break;
      RETURN_IF_ERROR(options.restart());
    }
    DumpStats local;
    local.attempts = attempt;
    last = DumpOnce(kv, out, options, &local);
    if (stats) *stats = local;
    if (!last.Is(StatusCode::kConflict)) return last;
  }
  return Conflict("the volume changed too much during the dump to keep one consistent snapshot (" +
                  last.message() + "); dump it while it is idle (no writes, or unmounted)");
}

Status CheckLoadTarget(KvStore& kv) {
  bool empty = true;
  RETURN_IF_ERROR(WithReadTransaction(kv, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(ScanResult any, txn.Scan("", "", 1));
    empty = any.items.empty();
    return Status::Ok();
  }));
  if (!empty) {
    return Exists(kv.Url() + " is not empty: load writes only into an empty metadata engine "
                             "(a new SQLite file, an empty Redis database or prefix...)");
  }
  return Status::Ok();
}

Status LoadVolume(KvStore& kv, std::istream& in, const LoadOptions& options, LoadStats* stats) {
  RETURN_IF_ERROR(CheckLoadTarget(kv));
  return Load(&kv, in, options, stats);
}

Status CheckDump(std::istream& in, LoadStats* stats) {
  return Load(nullptr, in, LoadOptions{}, stats);
}

}  // namespace tessera
