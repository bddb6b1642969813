// Minimal leveled logging to stderr (or a file chosen by the mount). Thread-safe.
#pragma once

#include <string>

namespace tessera {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void SetLogLevel(LogLevel level);
// Sends log lines to `path` (appending) instead of stderr. Returns false if it cannot be opened.
bool SetLogFile(const std::string& path);
void Log(LogLevel level, const std::string& message);

inline void LogInfo(const std::string& m) { Log(LogLevel::kInfo, m); }
inline void LogWarn(const std::string& m) { Log(LogLevel::kWarn, m); }
inline void LogError(const std::string& m) { Log(LogLevel::kError, m); }
inline void LogDebug(const std::string& m) { Log(LogLevel::kDebug, m); }

}  // namespace tessera
