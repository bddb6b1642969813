// The subcommands of the tessera binary. Each takes the whole argv with its
// own name at argv[1], prints one clear line on stderr for bad input, and
// returns the process exit code.
#pragma once

#include <string>

#include "common/status.h"

namespace tessera {

int RunFormat(int argc, char** argv);
int RunMount(int argc, char** argv);
int RunUmount(int argc, char** argv);
int RunStatus(int argc, char** argv);
int RunInfo(int argc, char** argv);
int RunBench(int argc, char** argv);
int RunCompact(int argc, char** argv);
int RunObjbench(int argc, char** argv);
int RunMdtest(int argc, char** argv);
int RunFsck(int argc, char** argv);
int RunTrash(int argc, char** argv);
int RunRmr(int argc, char** argv);
int RunClone(int argc, char** argv);
int RunDump(int argc, char** argv);
int RunLoad(int argc, char** argv);
int RunGc(int argc, char** argv);

// Prints "tessera <command>: <message>" on stderr and returns 1.
int Fail(const std::string& command, const Status& status);
int Fail(const std::string& command, const std::string& message);

extern const char* const kVersion;

// The first lines of a benchmark's report: "tessera TOOL VERSION, DATE,
// N cores" and the command line as given, so that figures can be traced.
void PrintBenchmarkTitle(const std::string& tool, int argc, char** argv);

}  // namespace tessera
