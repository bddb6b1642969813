// Status and Result<T>: how every layer reports failure without exceptions.
//
// A Status is a code plus a message with context a user can act on (which
// key, which object, which URL). An OK status carries no allocation. Codes
// are precise enough to map to every errno the file system returns
// (ToErrno), and IsRetryable() tells the I/O layers which failures a retry
// may cure.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace tessera {

enum class StatusCode : int {
  kOk = 0,
  kNotFound,       // ENOENT
  kExists,         // EEXIST
  kNotEmpty,       // ENOTEMPTY
  kNotDir,         // ENOTDIR
  kIsDir,          // EISDIR
  kInvalid,        // EINVAL: bad argument or malformed input
  kNameTooLong,    // ENAMETOOLONG
  kNoSpace,        // ENOSPC: capacity or inode quota reached
  kPermission,     // EACCES
  kNotPermitted,   // EPERM
  kCrossDevice,    // EXDEV
  kNotSupported,   // ENOTSUP
  kBusy,           // EBUSY
  kIo,             // EIO: storage failure, corrupt or missing data
  kConflict,       // transaction conflict; retried by WithTransaction
  kUnavailable,    // a server or path cannot be reached: retryable
  kCorrupt,        // data failed a check (EIO to the user)
  kNoData,         // ENODATA
  kRange,          // ERANGE
  kTooBig,         // EFBIG
  kBadHandle,      // EBADF
  kWouldBlock,     // EAGAIN: a lock is held by someone else
  kValueTooLarge,  // E2BIG: an extended attribute value or list too large
  kInternal,       // a bug: EIO to the user
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  bool Is(StatusCode c) const { return code_ == c; }
  // True for failures that may pass if the same call is made again.
  bool IsRetryable() const {
    return code_ == StatusCode::kUnavailable || code_ == StatusCode::kConflict ||
           code_ == StatusCode::kBusy;
  }
  // "code name: message", for logs and one-line CLI errors.
  std::string ToString() const;
  // Prepends context: "while X: <message>".
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

const char* StatusCodeName(StatusCode code);
// Maps a status to the errno a file system call should return (0 for OK).
int ToErrno(const Status& s);
// Builds a status from an errno value, with context.
Status FromErrno(int err, std::string_view context);

inline Status NotFound(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status Exists(std::string m) { return Status(StatusCode::kExists, std::move(m)); }
inline Status Invalid(std::string m) { return Status(StatusCode::kInvalid, std::move(m)); }
inline Status IoError(std::string m) { return Status(StatusCode::kIo, std::move(m)); }
inline Status Corrupt(std::string m) { return Status(StatusCode::kCorrupt, std::move(m)); }
inline Status Conflict(std::string m) { return Status(StatusCode::kConflict, std::move(m)); }
inline Status Unavailable(std::string m) { return Status(StatusCode::kUnavailable, std::move(m)); }
inline Status Internal(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

// Result<T>: a value or a non-OK Status, shaped like std::expected.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "Result built from an OK status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace tessera

#define TESSERA_CONCAT_INNER(a, b) a##b
#define TESSERA_CONCAT(a, b) TESSERA_CONCAT_INNER(a, b)

// RETURN_IF_ERROR(expr): returns the Status of expr from the caller when it is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::tessera::Status _st = (expr);                \
    if (!_st.ok()) return _st;                     \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates a Result, returns its Status on error,
// otherwise moves its value into lhs (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(TESSERA_CONCAT(_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
