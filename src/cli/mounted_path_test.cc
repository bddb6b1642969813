#include "cli/mounted_path.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tessera {
namespace {

// Lines as the kernel writes them (proc(5)): optional fields before " - ",
// space, tab, newline and backslash escaped as \ooo.
constexpr const char* kSample =
    "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
    "25 22 0:23 / /proc rw,nosuid shared:12 - proc proc rw\n"
    "30 22 0:26 / /tmp rw,nosuid,nodev shared:5 - tmpfs tmpfs rw\n"
    "40 30 0:50 / /tmp/my\\040vol rw,nosuid,nodev,relatime shared:200 - fuse.tessera "
    "tessera:vol rw,user_id=0,group_id=0,default_permissions,allow_other\n"
    "41 40 0:51 / /tmp/my\\040vol/scratch rw,relatime - tmpfs tmpfs rw\n"
    "42 40 0:52 / /tmp/my\\040vol/inner\\011tab\\134x rw - fuse.tessera tessera:inner rw\n"
    "43 30 0:53 /sub/dir /tmp/bound rw master:3 propagate_from:2 - ext4 /dev/sda1 rw\n"
    "44 30 0:54 / /tmp/stacked rw - tmpfs tmpfs rw\n"
    "45 44 0:55 / /tmp/stacked rw - fuse.tessera tessera:top rw\n"
    "garbage line without separator\n"
    "46 30 0:56 / /tmp/last rw - fuse.tessera tessera:last rw";  // no final newline

TEST(ParseMountInfoTest, FieldsAndEscapes) {
  auto mounts = ParseMountInfo(kSample);
  ASSERT_EQ(mounts.size(), 10u);  // the garbage line is skipped
  EXPECT_EQ(mounts[0].mount_point, "/");
  EXPECT_EQ(mounts[0].fs_type, "ext4");
  EXPECT_EQ(mounts[3].mount_point, "/tmp/my vol");
  EXPECT_EQ(mounts[3].fs_type, "fuse.tessera");
  EXPECT_EQ(mounts[3].root, "/");
  EXPECT_EQ(mounts[5].mount_point, "/tmp/my vol/inner\ttab\\x");
  // Several optional fields before the separator.
  EXPECT_EQ(mounts[6].mount_point, "/tmp/bound");
  EXPECT_EQ(mounts[6].root, "/sub/dir");
  EXPECT_EQ(mounts[6].fs_type, "ext4");
  EXPECT_EQ(mounts[9].mount_point, "/tmp/last");
  EXPECT_EQ(mounts[9].fs_type, "fuse.tessera");
}

TEST(ParseMountInfoTest, EmptyAndTruncated) {
  EXPECT_TRUE(ParseMountInfo("").empty());
  EXPECT_TRUE(ParseMountInfo("\n\n").empty());
  EXPECT_TRUE(ParseMountInfo("40 30 0:50 / /mnt rw -\n").empty());  // no type
  EXPECT_TRUE(ParseMountInfo("40 30 0:50 /\n").empty());
}

std::string Innermost(const std::string& path) {
  auto m = InnermostMount(ParseMountInfo(kSample), path);
  return m ? m->mount_point + " " + m->fs_type : "none";
}

TEST(InnermostMountTest, NestedMounts) {
  EXPECT_EQ(Innermost("/home/user/file"), "/ ext4");
  EXPECT_EQ(Innermost("/tmp"), "/tmp tmpfs");
  EXPECT_EQ(Innermost("/tmp/my vol"), "/tmp/my vol fuse.tessera");
  EXPECT_EQ(Innermost("/tmp/my vol/a/b.txt"), "/tmp/my vol fuse.tessera");
  // A mount inside the Tessera mount hides it below its mount point.
  EXPECT_EQ(Innermost("/tmp/my vol/scratch/x"), "/tmp/my vol/scratch tmpfs");
  EXPECT_EQ(Innermost("/tmp/my vol/inner\ttab\\x/f"), "/tmp/my vol/inner\ttab\\x fuse.tessera");
}

TEST(InnermostMountTest, WholeComponentsOnly) {
  // "/tmp/my vol" is a prefix of "/tmp/my volume" as a string, not as a path.
  EXPECT_EQ(Innermost("/tmp/my volume/f"), "/tmp tmpfs");
  EXPECT_EQ(Innermost("/tmp/my vol/scratchpad"), "/tmp/my vol fuse.tessera");
  EXPECT_EQ(Innermost("/tmpfile"), "/ ext4");
}

TEST(InnermostMountTest, StackedMountsTakeTheTopOne) {
  EXPECT_EQ(Innermost("/tmp/stacked/f"), "/tmp/stacked fuse.tessera");
  EXPECT_EQ(Innermost("/tmp/stacked"), "/tmp/stacked fuse.tessera");
}

TEST(InnermostMountTest, RelativePathsAndEmptyTable) {
  EXPECT_EQ(Innermost("tmp/my vol"), "none");
  EXPECT_FALSE(InnermostMount({}, "/tmp").has_value());
}

TEST(ResolveMountedPathTest, PathOutsideAnyTesseraMount) {
  // The test's own directory is not on a Tessera mount.
  auto r = ResolveMountedPath(".");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), ". is not inside a Tessera mount");
  auto missing = ResolveMountedPath("/nonexistent-tessera-test-path");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().Is(StatusCode::kNotFound));
  EXPECT_NE(missing.status().message().find("/nonexistent-tessera-test-path"), std::string::npos);
}

}  // namespace
}  // namespace tessera
