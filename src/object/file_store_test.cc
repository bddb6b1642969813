// What only the file store promises: its on-disk layout, its temporary
// files, its checks at open and the limits of mapping keys to paths.
#include "object/file_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/tessera-file-store-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
    root_ = tmp_ + "/root";
    auto store = FileStore::Open(root_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::permissions(tmp_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(tmp_, ec);
  }

  // Every file name under the root, relative to it.
  std::vector<std::string> FilesOnDisk() {
    std::vector<std::string> names;
    for (const auto& entry : fs::recursive_directory_iterator(root_)) {
      if (entry.is_regular_file()) names.push_back(fs::relative(entry.path(), root_).string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string tmp_;
  std::string root_;
  std::unique_ptr<FileStore> store_;
};

TEST_F(FileStoreTest, ObjectsLiveAtRootSlashKey) {
  EXPECT_EQ(store_->Describe(), "file://" + root_ + "/");
  EXPECT_EQ(store_->root(), root_);
  ASSERT_TRUE(store_->Put("vol/chunks/0/0/1_0_4096", "block").ok());
  ASSERT_TRUE(store_->Put("top", "level").ok());
  EXPECT_EQ(ReadFile(root_ + "/vol/chunks/0/0/1_0_4096"), "block");
  EXPECT_EQ(ReadFile(root_ + "/top"), "level");
  EXPECT_EQ(FilesOnDisk(), (std::vector<std::string>{"top", "vol/chunks/0/0/1_0_4096"}));

  // Files put there by other tools are objects too, and survive a reopen.
  WriteFile(root_ + "/vol/added", "by hand");
  auto reopened = FileStore::Open(root_ + "/");
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Get("vol/added"), "by hand");
  EXPECT_EQ(*(*reopened)->Get("top"), "level");
  EXPECT_EQ((*reopened)->Describe(), store_->Describe());
}

TEST_F(FileStoreTest, TemporaryFilesAreNeverListed) {
  ASSERT_TRUE(store_->Put("a/x", "1").ok());
  ASSERT_TRUE(store_->Put("b", "2").ok());
  // Put leaves nothing behind.
  EXPECT_EQ(FilesOnDisk(), (std::vector<std::string>{"a/x", "b"}));
  // A crash mid-Put leaves temporary files; List skips them, even where one
  // is the only file in a directory.
  const std::string tmp(FileStore::kTempPrefix);
  WriteFile(root_ + "/" + tmp + "0123456789abcdef", "partial");
  WriteFile(root_ + "/a/" + tmp + "fedcba9876543210", "partial");
  fs::create_directories(root_ + "/c");
  WriteFile(root_ + "/c/" + tmp + "00", "partial");
  auto page = store_->List("", "", 0);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "a/x");
  EXPECT_EQ(page->objects[1].key, "b");
  // Temporary names are not keys.
  EXPECT_EQ(store_->Get("a/" + tmp + "fedcba9876543210").status().code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->Put(tmp + "x", "y").code(), StatusCode::kInvalid);
}

TEST_F(FileStoreTest, EmptyParentDirectoriesAreRemovedOnDelete) {
  ASSERT_TRUE(store_->Put("d/e/f/x", "1").ok());
  ASSERT_TRUE(store_->Put("d/y", "2").ok());
  ASSERT_TRUE(store_->Delete("d/e/f/x").ok());
  EXPECT_FALSE(fs::exists(root_ + "/d/e"));
  EXPECT_TRUE(fs::is_directory(root_ + "/d"));
  ASSERT_TRUE(store_->Delete("d/y").ok());
  EXPECT_FALSE(fs::exists(root_ + "/d"));
  EXPECT_TRUE(fs::is_directory(root_));  // never the root itself
  EXPECT_TRUE(fs::is_empty(root_));
}

TEST_F(FileStoreTest, CreatesAMissingRoot) {
  const std::string deep = tmp_ + "/x/y/z";
  auto store = FileStore::Open(deep);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(fs::is_directory(deep));
  EXPECT_TRUE(fs::is_empty(deep));  // the write probe is cleaned up
}

TEST_F(FileStoreTest, UnusableRootFailsAtOpenNamingTheDirectory) {
  WriteFile(tmp_ + "/file", "not a directory");
  // Under a regular file: creating it fails with ENOTDIR.
  const std::string under_file = tmp_ + "/file/sub";
  auto store = FileStore::Open(under_file);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotDir);
  EXPECT_NE(store.status().message().find(under_file), std::string::npos)
      << store.status().message();
  // The root itself is a file.
  auto is_file = FileStore::Open(tmp_ + "/file");
  ASSERT_FALSE(is_file.ok());
  EXPECT_EQ(is_file.status().code(), StatusCode::kNotDir);
  EXPECT_NE(is_file.status().message().find(tmp_ + "/file"), std::string::npos);

  EXPECT_EQ(FileStore::Open("").status().code(), StatusCode::kInvalid);

  // Permission bits only stop a non-root user; root bypasses them.
  if (geteuid() != 0) {
    const std::string locked = tmp_ + "/locked";
    ASSERT_EQ(mkdir(locked.c_str(), 0555), 0);
    auto unwritable = FileStore::Open(locked);
    ASSERT_FALSE(unwritable.ok());
    EXPECT_EQ(unwritable.status().code(), StatusCode::kPermission);
    EXPECT_NE(unwritable.status().message().find(locked), std::string::npos);
    auto uncreatable = FileStore::Open(locked + "/sub");
    ASSERT_FALSE(uncreatable.ok());
    EXPECT_EQ(uncreatable.status().code(), StatusCode::kPermission);
    EXPECT_NE(uncreatable.status().message().find(locked + "/sub"), std::string::npos);
  }
}

TEST_F(FileStoreTest, KeysThatAreNotPlainRelativePathsAreInvalid) {
  for (const std::string& key : std::vector<std::string>{
           "/abs", "a/", "a//b", "./a", "a/./b", "..", "../x", "a/../b", std::string("a\0b", 3)}) {
    Status put = store_->Put(key, "x");
    EXPECT_EQ(put.code(), StatusCode::kInvalid) << key;
    EXPECT_EQ(store_->Get(key).status().code(), StatusCode::kInvalid) << key;
    EXPECT_EQ(store_->Delete(key).code(), StatusCode::kInvalid) << key;
  }
  EXPECT_TRUE(fs::is_empty(root_));
  EXPECT_FALSE(fs::exists(tmp_ + "/x"));  // nothing escaped the root
}

TEST_F(FileStoreTest, KeyCannotAlsoBeADirectory) {
  ASSERT_TRUE(store_->Put("a/b", "object").ok());
  Status below = store_->Put("a/b/c", "x");
  EXPECT_EQ(below.code(), StatusCode::kNotDir) << below.ToString();
  EXPECT_NE(below.message().find("a/b/c"), std::string::npos);
  EXPECT_EQ(store_->Get("a/b/c").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->Delete("a/b/c").ok());
  EXPECT_EQ(*store_->Get("a/b"), "object");

  ASSERT_TRUE(store_->Put("x/y/z", "deep").ok());
  Status above = store_->Put("x/y", "x");
  EXPECT_EQ(above.code(), StatusCode::kIsDir) << above.ToString();
  EXPECT_NE(above.message().find("x/y"), std::string::npos);
  // The directory is not an object: absent to Get and Head, and deleting it
  // is a no-op that leaves the objects below alone.
  EXPECT_EQ(store_->Get("x/y").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Head("x/y").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->Delete("x/y").ok());
  EXPECT_EQ(*store_->Get("x/y/z"), "deep");
  EXPECT_EQ(FilesOnDisk(), (std::vector<std::string>{"a/b", "x/y/z"}));
}

}  // namespace
}  // namespace tessera
