// SliceStore keeps the bytes of slices as block objects in an object store,
// under the key format fixed by the data format:
//   <volume>/chunks/<id / 1000000>/<id / 1000>/<id>_<block index>_<block size>
// A slice of `size` bytes has ceil(size / block_size) blocks; every block is
// block_size bytes except the last. Thread-safe; every call blocks on the
// object store.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/slice.h"
#include "common/status.h"
#include "object/object_store.h"

namespace tessera {

class SliceStore {
 public:
  // `store` must outlive this object.
  SliceStore(std::string volume, uint64_t block_size, ObjectStore* store);

  uint64_t block_size() const { return block_size_; }
  ObjectStore& objects() { return *store_; }

  // The object key of one block.
  std::string BlockKey(SliceId id, uint64_t block_index, uint64_t this_block_size) const;
  // Stores block `index` of a slice; `data` is the block's whole content.
  Status PutBlock(SliceId id, uint64_t index, std::string_view data);
  // Reads [off, off + len) of a slice of total size `size` into `out`.
  // kIo naming the object when a block is missing or shorter than it must be.
  Status Read(SliceId id, uint32_t size, uint64_t off, uint64_t len, char* out);
  // Deletes every block of the slice; absent blocks are not an error.
  Status Delete(const SliceRef& slice);

 private:
  uint64_t BlockSizeAt(uint64_t index, uint64_t slice_size) const;

  const std::string volume_;
  const uint64_t block_size_;
  ObjectStore* const store_;
};

}  // namespace tessera
