// A private redis-server for tests: started at the first call in a test
// process (a free port on 127.0.0.1, a temporary working directory, no
// persistence) and killed when the process exits, or by the kernel if the
// process dies first.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace tessera {

// The URL of a new, empty namespace on the test server (a fresh ?prefix=),
// so that each test starts from a clean store. Errors (kUnavailable) say
// what is missing or what failed.
Result<std::string> NewRedisTestUrl();

// The same on a second private server that speaks only TLS (rediss://),
// with a self-signed certificate for 127.0.0.1 named by the URL's cacert=.
Result<std::string> NewRedisTlsTestUrl();

// Runs one command on the test server (started if needed) and returns its
// reply as text: a string, status or integer. An error reply is kIo.
Result<std::string> RedisTestCommand(const std::vector<std::string>& argv);

}  // namespace tessera
