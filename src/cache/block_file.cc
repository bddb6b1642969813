#include "cache/block_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <vector>

#include "common/coding.h"
#include "common/crc32c.h"
#include "common/random.h"

namespace tessera::blockfile {
namespace {

constexpr char kMagic[4] = {'T', 'C', 'B', 'F'};

bool KeepsAsIs(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lower case is not canonical
}

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  // Closes now, reporting the error close() may carry for a written file.
  int Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string EncodeHeader(uint64_t block_len) {
  std::string h(kMagic, sizeof(kMagic));
  PutBig32(&h, kVersion);
  PutBig64(&h, block_len);
  PutBig32(&h, crc32c::Value(h));
  PutBig32(&h, 0);
  return h;
}

// Block length from a header, or kCorrupt naming what is wrong.
Result<uint64_t> ParseHeader(const char* h) {
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) return Corrupt("bad magic");
  if (GetBig32(h + 16) != crc32c::Value(h, 16)) return Corrupt("bad header checksum");
  uint32_t version = GetBig32(h + 4);
  if (version != kVersion) return Corrupt("unknown version " + std::to_string(version));
  return GetBig64(h + 8);
}

// Fills the buffers of `iov` from `offset` on, looping over short reads.
// kCorrupt when the file ends first.
// Moves past `n` bytes already transferred: iov[*i] is the next to use.
void Advance(std::vector<iovec>& iov, size_t* i, size_t n) {
  while (n > 0) {
    size_t take = std::min(n, iov[*i].iov_len);
    iov[*i].iov_base = static_cast<char*>(iov[*i].iov_base) + take;
    iov[*i].iov_len -= take;
    n -= take;
    if (iov[*i].iov_len == 0) ++*i;
  }
}

Status PreadvFull(int fd, std::vector<iovec> iov, uint64_t offset) {
  size_t i = 0;
  while (i < iov.size()) {
    if (iov[i].iov_len == 0) {
      ++i;
      continue;
    }
    ssize_t n = ::preadv(fd, &iov[i], static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX)),
                         static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(std::string("read: ") + std::strerror(errno));
    }
    if (n == 0) return Corrupt("file is shorter than its header says");
    offset += static_cast<uint64_t>(n);
    Advance(iov, &i, static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status WriteAll(int fd, std::vector<iovec> iov) {
  size_t i = 0;
  while (i < iov.size()) {
    if (iov[i].iov_len == 0) {
      ++i;
      continue;
    }
    ssize_t n = ::writev(fd, &iov[i], static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FromErrno(errno, "write");
    }
    Advance(iov, &i, static_cast<size_t>(n));
  }
  return Status::Ok();
}

// The span [begin, end) of a block read into up to three buffers laid end to
// end; computes the CRC32C of any sub-range of the span.
class Span {
 public:
  void Add(const char* p, uint64_t n) {
    if (n > 0) parts_[count_++] = {p, n};
  }
  uint32_t Crc(uint64_t from, uint64_t to) const {
    uint32_t crc = 0;
    uint64_t base = 0;
    for (int i = 0; i < count_; ++i) {
      uint64_t lo = std::max(from, base), hi = std::min(to, base + parts_[i].n);
      if (lo < hi) crc = crc32c::Extend(crc, parts_[i].p + (lo - base), hi - lo);
      base += parts_[i].n;
    }
    return crc;
  }

 private:
  struct Part {
    const char* p;
    uint64_t n;
  };
  Part parts_[3] = {};
  int count_ = 0;
};

}  // namespace

std::string EscapeKey(std::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size() + 16);
  for (char ch : key) {
    auto c = static_cast<unsigned char>(ch);
    if (KeepsAsIs(c)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::optional<std::string> UnescapeKey(std::string_view name) {
  if (name.empty()) return std::nullopt;
  std::string key;
  key.reserve(name.size());
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if (KeepsAsIs(c)) {
      key.push_back(name[i]);
      continue;
    }
    if (c != '%' || i + 2 >= name.size()) return std::nullopt;
    int hi = HexValue(name[i + 1]), lo = HexValue(name[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    auto decoded = static_cast<unsigned char>(hi << 4 | lo);
    if (KeepsAsIs(decoded)) return std::nullopt;  // escaped needlessly: not ours
    key.push_back(static_cast<char>(decoded));
    i += 2;
  }
  return key;
}

Status Write(const std::string& path, std::string_view block) {
  size_t slash = path.rfind('/');
  std::string tmp = path.substr(0, slash + 1) + std::string(kTempPrefix) + RandomHex16();
  std::string meta = EncodeHeader(block.size());
  for (uint64_t off = 0; off < block.size(); off += kPieceSize) {
    PutBig32(&meta, crc32c::Value(block.data() + off, std::min(kPieceSize, block.size() - off)));
  }

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return FromErrno(errno, "create cache file " + tmp);
  FdCloser closer(fd);
  std::vector<iovec> iov = {{meta.data(), meta.size()},
                            {const_cast<char*>(block.data()), block.size()}};
  Status st = WriteAll(fd, std::move(iov));
  if (st.ok() && closer.Close() != 0) st = FromErrno(errno, "close");
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = FromErrno(errno, "rename");
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st.WithContext("writing cache file " + path);
  }
  return Status::Ok();
}

Result<uint64_t> ReadHeader(int fd) {
  char h[kHeaderSize];
  std::vector<iovec> iov = {{h, sizeof(h)}};
  Status st = PreadvFull(fd, iov, 0);
  if (!st.ok()) return st.Is(StatusCode::kCorrupt) ? Corrupt("file shorter than a header") : st;
  ASSIGN_OR_RETURN(uint64_t block_len, ParseHeader(h));
  struct stat sb;
  if (::fstat(fd, &sb) != 0) return FromErrno(errno, "fstat");
  if (static_cast<uint64_t>(sb.st_size) != FileSize(block_len)) {
    return Corrupt("file is " + std::to_string(sb.st_size) + " bytes, header says block of " +
                   std::to_string(block_len));
  }
  return block_len;
}

Status ReadRange(int fd, uint64_t block_len, uint64_t offset, uint64_t length, char* out) {
  if (offset > block_len || length > block_len - offset) return Invalid("range outside block");
  if (length == 0) return Status::Ok();
  const uint64_t first = offset / kPieceSize;
  const uint64_t last = (offset + length - 1) / kPieceSize;
  const uint64_t span_begin = first * kPieceSize;
  const uint64_t span_end = std::min(block_len, (last + 1) * kPieceSize);

  // The header and the checksums of pieces [0, last] in one read: they are
  // adjacent and small (4 bytes per 32 KiB).
  std::string meta(kHeaderSize + 4 * (last + 1), '\0');
  RETURN_IF_ERROR(PreadvFull(fd, {{meta.data(), meta.size()}}, 0));
  ASSIGN_OR_RETURN(uint64_t header_len, ParseHeader(meta.data()));
  if (header_len != block_len) {
    return Corrupt("header says block of " + std::to_string(header_len) + " bytes, expected " +
                   std::to_string(block_len));
  }

  // Whole pieces must be read to check them; the parts outside the caller's
  // range go to a scratch buffer so that the range lands in `out` directly.
  const uint64_t head = offset - span_begin;
  const uint64_t tail = span_end - (offset + length);
  std::unique_ptr<char[]> scratch(head + tail > 0 ? new char[head + tail] : nullptr);
  std::vector<iovec> iov = {{scratch.get(), head}, {out, length}, {scratch.get() + head, tail}};
  const uint64_t data_start = kHeaderSize + 4 * PieceCount(block_len);
  RETURN_IF_ERROR(PreadvFull(fd, iov, data_start + span_begin));

  Span span;
  span.Add(scratch.get(), head);
  span.Add(out, length);
  span.Add(scratch.get() + head, tail);
  for (uint64_t p = first; p <= last; ++p) {
    uint64_t from = p * kPieceSize - span_begin;
    uint64_t to = std::min(block_len, (p + 1) * kPieceSize) - span_begin;
    uint32_t want = GetBig32(meta.data() + kHeaderSize + 4 * p);
    if (span.Crc(from, to) != want) {
      return Corrupt("checksum mismatch in 32 KiB piece " + std::to_string(p));
    }
  }
  return Status::Ok();
}

}  // namespace tessera::blockfile
