#include "common/log.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <mutex>

namespace tessera {
namespace {
std::mutex g_mu;
LogLevel g_level = LogLevel::kInfo;
FILE* g_out = nullptr;  // nullptr: stderr
}  // namespace

void SetLogLevel(LogLevel level) {
  std::lock_guard lock(g_mu);
  g_level = level;
}

bool SetLogFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr) return false;
  std::lock_guard lock(g_mu);
  if (g_out != nullptr) std::fclose(g_out);
  g_out = f;
  return true;
}

void Log(LogLevel level, const std::string& message) {
  static const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  std::lock_guard lock(g_mu);
  if (level < g_level) return;
  char when[32];
  std::time_t now = std::time(nullptr);
  std::tm tm;
  localtime_r(&now, &tm);
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
  FILE* out = g_out != nullptr ? g_out : stderr;
  std::fprintf(out, "%s tessera[%d] %s %s\n", when, static_cast<int>(getpid()),
               kNames[static_cast<int>(level)], message.c_str());
  std::fflush(out);
}

}  // namespace tessera
