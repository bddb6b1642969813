// A test fixture with a Vfs over a fresh volume in memory (memory KV and
// memory object store, 64 KiB blocks).
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "vfs/vfs.h"

namespace tessera {

class VfsFixture : public ::testing::Test {
 protected:
  static constexpr const char* kVolume = "vfs-test";

  void SetUp() override {
    auto kv = OpenKv("mem://", KvOptions{.create_if_missing = true});
    ASSERT_TRUE(kv.ok());
    VolumeSettings s;
    s.name = kVolume;
    s.uuid = NewUuid();
    s.block_size = 64 * 1024;
    s.trash_days = 0;  // unlink deletes
    bool created;
    ASSERT_TRUE(Meta::Format(**kv, s, &created).ok());
    auto meta = Meta::Open(std::move(*kv));
    ASSERT_TRUE(meta.ok());
    meta_ = std::move(*meta);
    auto objects = OpenObjectStore("mem", "");
    ASSERT_TRUE(objects.ok());
    objects_ = std::move(*objects);
    slices_ = std::make_unique<SliceStore>(s.name, s.block_size, objects_.get());
    vfs_ = std::make_unique<Vfs>(meta_.get(), slices_.get(), VfsOptions{});
  }

  Context ctx_{0, 0, 1};
  std::unique_ptr<Meta> meta_;
  std::unique_ptr<ObjectStore> objects_;
  std::unique_ptr<SliceStore> slices_;
  std::unique_ptr<Vfs> vfs_;
};

}  // namespace tessera
