#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace tessera {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kExists: return "already exists";
    case StatusCode::kNotEmpty: return "not empty";
    case StatusCode::kNotDir: return "not a directory";
    case StatusCode::kIsDir: return "is a directory";
    case StatusCode::kInvalid: return "invalid argument";
    case StatusCode::kNameTooLong: return "name too long";
    case StatusCode::kNoSpace: return "no space";
    case StatusCode::kPermission: return "permission denied";
    case StatusCode::kNotPermitted: return "operation not permitted";
    case StatusCode::kCrossDevice: return "cross-device";
    case StatusCode::kNotSupported: return "not supported";
    case StatusCode::kBusy: return "busy";
    case StatusCode::kIo: return "I/O error";
    case StatusCode::kConflict: return "conflict";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kCorrupt: return "corrupt data";
    case StatusCode::kNoData: return "no data";
    case StatusCode::kRange: return "out of range";
    case StatusCode::kTooBig: return "too big";
    case StatusCode::kBadHandle: return "bad handle";
    case StatusCode::kWouldBlock: return "would block";
    case StatusCode::kValueTooLarge: return "value too large";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  if (message_.empty()) return StatusCodeName(code_);
  return message_;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

int ToErrno(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kNotFound: return ENOENT;
    case StatusCode::kExists: return EEXIST;
    case StatusCode::kNotEmpty: return ENOTEMPTY;
    case StatusCode::kNotDir: return ENOTDIR;
    case StatusCode::kIsDir: return EISDIR;
    case StatusCode::kInvalid: return EINVAL;
    case StatusCode::kNameTooLong: return ENAMETOOLONG;
    case StatusCode::kNoSpace: return ENOSPC;
    case StatusCode::kPermission: return EACCES;
    case StatusCode::kNotPermitted: return EPERM;
    case StatusCode::kCrossDevice: return EXDEV;
    case StatusCode::kNotSupported: return ENOTSUP;
    case StatusCode::kBusy: return EBUSY;
    case StatusCode::kNoData: return ENODATA;
    case StatusCode::kRange: return ERANGE;
    case StatusCode::kTooBig: return EFBIG;
    case StatusCode::kBadHandle: return EBADF;
    case StatusCode::kWouldBlock: return EAGAIN;
    case StatusCode::kValueTooLarge: return E2BIG;
    case StatusCode::kIo:
    case StatusCode::kConflict:
    case StatusCode::kUnavailable:
    case StatusCode::kCorrupt:
    case StatusCode::kInternal: return EIO;
  }
  return EIO;
}

Status FromErrno(int err, std::string_view context) {
  StatusCode code = StatusCode::kIo;
  switch (err) {
    case ENOENT: code = StatusCode::kNotFound; break;
    case EEXIST: code = StatusCode::kExists; break;
    case ENOTEMPTY: code = StatusCode::kNotEmpty; break;
    case ENOTDIR: code = StatusCode::kNotDir; break;
    case EISDIR: code = StatusCode::kIsDir; break;
    case EINVAL: code = StatusCode::kInvalid; break;
    case ENAMETOOLONG: code = StatusCode::kNameTooLong; break;
    case ENOSPC: case EDQUOT: code = StatusCode::kNoSpace; break;
    case EACCES: case EROFS: code = StatusCode::kPermission; break;
    case EPERM: code = StatusCode::kNotPermitted; break;
    case EXDEV: code = StatusCode::kCrossDevice; break;
    case EBUSY: code = StatusCode::kBusy; break;
    case EINTR: case ETIMEDOUT: code = StatusCode::kUnavailable; break;
    case EAGAIN: code = StatusCode::kWouldBlock; break;
    case E2BIG: code = StatusCode::kValueTooLarge; break;
    default: break;
  }
  return Status(code, std::string(context) + ": " + std::strerror(err));
}

}  // namespace tessera
