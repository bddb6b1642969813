// Extended attributes: one key A<ino>X<name> per attribute, the value as is.
// Limits are Linux's (XATTR_NAME_MAX, XATTR_SIZE_MAX), so that programs see
// the same errors as on a local file system; the kernel checks them too, but
// other front doors (gateway, tools) reach this layer without it.
#include <sys/xattr.h>

#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::LoadAttr;
using meta_internal::PutAttr;

namespace {

constexpr size_t kXattrNameMax = 255;
constexpr size_t kXattrValueMax = 65536;
// POSIX ACLs live in "system." names; they get their own records later,
// never free-form values.
constexpr std::string_view kSystemPrefix = "system.";

Status CheckXattrName(std::string_view name) {
  if (name.empty()) return Status(StatusCode::kRange, "empty extended attribute name");
  if (name.size() > kXattrNameMax) {
    return Status(StatusCode::kRange, "extended attribute name longer than 255 bytes");
  }
  return Status::Ok();
}

bool IsSystemName(std::string_view name) { return name.starts_with(kSystemPrefix); }

}  // namespace

Status Meta::SetXattr(const Context&, InodeId ino, std::string_view name, std::string_view value,
                      int flags) {
  RETURN_IF_ERROR(CheckXattrName(name));
  if (value.size() > kXattrValueMax) {
    return Status(StatusCode::kValueTooLarge, "extended attribute value longer than 65536 bytes");
  }
  if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) return Invalid("unknown setxattr flags");
  if (IsSystemName(name)) {
    return Status(StatusCode::kNotSupported,
                  "'" + std::string(name) + "': system.* attributes are not supported");
  }
  const std::string key = keys::Xattr(ino, name);
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto got, txn.BatchGet({keys::Attr(ino), key}));
    if (!got[0]) return NotFound("inode " + std::to_string(ino.value()) + " does not exist");
    ASSIGN_OR_RETURN(Attr a, DecodeAttr(*got[0]));
    if ((flags & XATTR_CREATE) && got[1]) return Exists("extended attribute exists");
    if ((flags & XATTR_REPLACE) && !got[1]) {
      return Status(StatusCode::kNoData, "no extended attribute '" + std::string(name) + "'");
    }
    txn.Put(key, value);
    a.ctime_ns = NowNanos();
    PutAttr(txn, ino, a);
    return Status::Ok();
  });
}

Result<std::string> Meta::GetXattr(InodeId ino, std::string_view name) {
  RETURN_IF_ERROR(CheckXattrName(name));
  std::string out;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto got, txn.BatchGet({keys::Attr(ino), keys::Xattr(ino, name)}));
    if (!got[0]) return NotFound("inode " + std::to_string(ino.value()) + " does not exist");
    if (!got[1] || IsSystemName(name)) {
      return Status(StatusCode::kNoData, "no extended attribute '" + std::string(name) + "'");
    }
    out = std::move(*got[1]);
    return Status::Ok();
  }));
  return out;
}

Result<std::vector<std::string>> Meta::ListXattr(InodeId ino) {
  std::vector<std::string> out;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    out.clear();
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, ino, &a));
    const std::string begin = keys::XattrsBegin(ino);
    std::string from = begin;
    const std::string end = keys::XattrsEnd(ino);
    while (true) {
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 256));
      for (const auto& kv : page.items) {
        std::string name = kv.key.substr(begin.size());
        if (!IsSystemName(name)) out.push_back(std::move(name));
      }
      if (!page.more || page.items.empty()) break;
      from = page.items.back().key + '\0';
    }
    return Status::Ok();
  }));
  return out;
}

Status Meta::RemoveXattr(const Context&, InodeId ino, std::string_view name) {
  RETURN_IF_ERROR(CheckXattrName(name));
  const std::string key = keys::Xattr(ino, name);
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto got, txn.BatchGet({keys::Attr(ino), key}));
    if (!got[0]) return NotFound("inode " + std::to_string(ino.value()) + " does not exist");
    ASSIGN_OR_RETURN(Attr a, DecodeAttr(*got[0]));
    if (!got[1] || IsSystemName(name)) {
      return Status(StatusCode::kNoData, "no extended attribute '" + std::string(name) + "'");
    }
    txn.Delete(key);
    a.ctime_ns = NowNanos();
    PutAttr(txn, ino, a);
    return Status::Ok();
  });
}

}  // namespace tessera
