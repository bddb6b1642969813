#include <cstdio>
#include <cstring>
#include <ctime>
#include <thread>
#include <string>

#include "cli/commands.h"

namespace tessera {

const char* const kVersion = "0.1.0";

int Fail(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "tessera %s: %s\n", command.c_str(), message.c_str());
  return 1;
}

int Fail(const std::string& command, const Status& status) {
  return Fail(command, status.ToString());
}

void PrintBenchmarkTitle(const std::string& tool, int argc, char** argv) {
  std::time_t now = std::time(nullptr);
  std::tm tm;
  localtime_r(&now, &tm);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %z", &tm);
  std::string command = "tessera";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  std::printf("tessera %s %s, %s, %u cores\n", tool.c_str(), kVersion, date,
              std::thread::hardware_concurrency());
  std::printf("command:     %s\n", command.c_str());
}

namespace {

constexpr const char* kUsage = R"(tessera: a distributed POSIX file system over an object store and a database

Usage: tessera COMMAND [OPTIONS] ARGS...

Commands:
  format    create a volume (settings in the metadata engine, data in a bucket)
  mount     mount a volume through FUSE
  umount    unmount a volume, flushing everything
  status    show a volume's settings and live sessions
  info      show a path's inode, chunks, slices and block objects
  bench     benchmark a directory (big file, small files, stat)
  compact   merge the slices of files into one per chunk
  fsck      check a volume's metadata and block objects, and repair them
  trash     list the trash and restore deleted files
  rmr       remove a directory tree fast (into the trash when it is on)
  clone     copy a file or a tree without copying data
  dump      write a volume's metadata as JSON (a backup, or to move it)
  load      write a dump into an empty metadata engine of any type
  gc        find leaked block objects and finish pending deletions
  objbench  benchmark an object store (put, get, head, list, delete)
  mdtest    benchmark the metadata engine (latency of each operation, no mount)
  version   print the version

Run 'tessera COMMAND --help' for the options of a command.
Metadata URLs: sqlite3://PATH (embedded default)
)";

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "format") return RunFormat(argc, argv);
  if (command == "mount") return RunMount(argc, argv);
  if (command == "umount" || command == "unmount") return RunUmount(argc, argv);
  if (command == "status") return RunStatus(argc, argv);
  if (command == "info") return RunInfo(argc, argv);
  if (command == "bench") return RunBench(argc, argv);
  if (command == "compact") return RunCompact(argc, argv);
  if (command == "objbench") return RunObjbench(argc, argv);
  if (command == "mdtest") return RunMdtest(argc, argv);
  if (command == "fsck") return RunFsck(argc, argv);
  if (command == "trash") return RunTrash(argc, argv);
  if (command == "rmr") return RunRmr(argc, argv);
  if (command == "clone") return RunClone(argc, argv);
  if (command == "dump") return RunDump(argc, argv);
  if (command == "load") return RunLoad(argc, argv);
  if (command == "gc") return RunGc(argc, argv);
  if (command == "version" || command == "--version" || command == "-V") {
    std::printf("tessera %s\n", kVersion);
    return 0;
  }
  std::fprintf(stderr, "tessera: unknown command '%s' (run 'tessera --help')\n", command.c_str());
  return 2;
}
