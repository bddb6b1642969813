#include "data/slice_store.h"

#include <algorithm>
#include <cstring>

namespace tessera {

SliceStore::SliceStore(std::string volume, uint64_t block_size, ObjectStore* store)
    : volume_(std::move(volume)), block_size_(block_size), store_(store) {}

std::string SliceStore::BlockKey(SliceId id, uint64_t index, uint64_t this_block_size) const {
  const uint64_t v = id.value();
  return volume_ + "/chunks/" + std::to_string(v / 1000000) + "/" + std::to_string(v / 1000) +
         "/" + std::to_string(v) + "_" + std::to_string(index) + "_" +
         std::to_string(this_block_size);
}

uint64_t SliceStore::BlockSizeAt(uint64_t index, uint64_t slice_size) const {
  return std::min(block_size_, slice_size - index * block_size_);
}

Status SliceStore::PutBlock(SliceId id, uint64_t index, std::string_view data) {
  return store_->Put(BlockKey(id, index, data.size()), data);
}

Status SliceStore::Read(SliceId id, uint32_t size, uint64_t off, uint64_t len, char* out) {
  if (off + len > size) return Internal("read past the end of slice " + std::to_string(id.value()));
  while (len > 0) {
    const uint64_t index = off / block_size_;
    const uint64_t in_block = off % block_size_;
    const uint64_t this_size = BlockSizeAt(index, size);
    const uint64_t n = std::min(len, this_size - in_block);
    const std::string key = BlockKey(id, index, this_size);
    auto data = store_->Get(key, in_block, static_cast<int64_t>(n));
    if (!data.ok()) {
      return IoError("cannot read block " + key + " from " + store_->Describe() + ": " +
                     data.status().ToString());
    }
    if (data->size() != n) {
      return IoError("block " + key + " in " + store_->Describe() + " is shorter than " +
                     std::to_string(this_size) + " bytes");
    }
    std::memcpy(out, data->data(), n);
    out += n;
    off += n;
    len -= n;
  }
  return Status::Ok();
}

Status SliceStore::Delete(const SliceRef& slice) {
  Status first;
  const uint64_t blocks = (slice.size + block_size_ - 1) / block_size_;
  for (uint64_t i = 0; i < blocks; ++i) {
    Status st = store_->Delete(BlockKey(slice.id, i, BlockSizeAt(i, slice.size)));
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

}  // namespace tessera
