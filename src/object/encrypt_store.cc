#include "object/encrypt_store.h"

#include "object/crypto.h"

namespace tessera {

static_assert(EncryptStore::kOverhead == 1 + kGcmNonceSize + kGcmTagSize);

Result<std::unique_ptr<EncryptStore>> EncryptStore::Open(std::unique_ptr<ObjectStore> inner,
                                                         std::string data_key) {
  if (data_key.size() != kDataKeySize) {
    return Invalid("a data key has " + std::to_string(kDataKeySize) + " bytes, not " +
                   std::to_string(data_key.size()));
  }
  return std::unique_ptr<EncryptStore>(new EncryptStore(std::move(inner), std::move(data_key)));
}

EncryptStore::EncryptStore(std::unique_ptr<ObjectStore> inner, std::string data_key)
    : inner_(std::move(inner)), data_key_(std::move(data_key)) {}

Status EncryptStore::Put(std::string_view key, std::string_view data) {
  // A nonce must never repeat under one key: 96 random bits make a repeat
  // negligible for far more objects than a volume will ever hold.
  ASSIGN_OR_RETURN(std::string nonce, RandomBytes(kGcmNonceSize));
  std::string stored(kOverhead + data.size(), '\0');
  stored[0] = kFormat;
  stored.replace(1, kGcmNonceSize, nonce);
  char* body = stored.data() + 1 + kGcmNonceSize;
  RETURN_IF_ERROR(GcmSeal(data_key_, nonce, key, data, body, body + data.size()));
  return inner_->Put(key, stored);
}

Result<std::string> EncryptStore::Decrypt(std::string_view key, std::string_view stored) const {
  auto corrupt = [&](const std::string& why) {
    return Corrupt("encrypted object " + std::string(key) + " in " + Describe() + ": " + why);
  };
  if (stored.size() < kOverhead) {
    return corrupt(std::to_string(stored.size()) + " bytes is too short to be encrypted");
  }
  if (stored.front() != kFormat) return corrupt("unknown format byte");
  const size_t n = stored.size() - kOverhead;
  std::string data(n, '\0');
  Status st =
      GcmOpen(data_key_, stored.substr(1, kGcmNonceSize), key, stored.substr(1 + kGcmNonceSize, n),
              stored.substr(1 + kGcmNonceSize + n), data.data());
  if (st.Is(StatusCode::kCorrupt)) {
    return corrupt(
        "authentication failed (damaged, moved from another key, or encrypted "
        "with another data key)");
  }
  RETURN_IF_ERROR(st);
  return data;
}

Result<std::string> EncryptStore::Get(std::string_view key, uint64_t offset, int64_t length) {
  ASSIGN_OR_RETURN(std::string stored, inner_->Get(key));
  ASSIGN_OR_RETURN(std::string data, Decrypt(key, stored));
  if (offset >= data.size()) return std::string();
  if (offset == 0 && (length < 0 || static_cast<uint64_t>(length) >= data.size())) return data;
  return data.substr(offset, length < 0 ? std::string::npos : static_cast<size_t>(length));
}

Result<ObjectInfo> EncryptStore::Head(std::string_view key) {
  ASSIGN_OR_RETURN(ObjectInfo info, inner_->Head(key));
  if (info.size < kOverhead) {
    return Corrupt("encrypted object " + std::string(key) + " in " + Describe() + ": " +
                   std::to_string(info.size) + " bytes is too short to be encrypted");
  }
  info.size -= kOverhead;
  return info;
}

Result<ListPage> EncryptStore::List(std::string_view prefix, std::string_view start_after,
                                    size_t limit) {
  ASSIGN_OR_RETURN(ListPage page, inner_->List(prefix, start_after, limit));
  // A listing never fails for one bad object: a too-short one shows as empty.
  for (ObjectInfo& o : page.objects) o.size = o.size >= kOverhead ? o.size - kOverhead : 0;
  return page;
}

}  // namespace tessera
