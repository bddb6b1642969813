// A private PostgreSQL server for tests: started at the first call in a test
// process (initdb in a temporary directory, a free port on 127.0.0.1, fsync
// off) and stopped when the process exits. Uses the Debian binaries under
// /usr/lib/postgresql/*/bin; as root it runs them as the `postgres` user,
// since PostgreSQL refuses to run as root.
#pragma once

#include <string>

#include "common/status.h"

namespace tessera {

// The URL of a new, empty store on the test server (its own schema, chosen
// by the URL's search_path), so that each test starts from a clean store.
// Errors (kUnavailable) say what is missing or what failed, with the tail of
// the server's log.
Result<std::string> NewPgTestDatabase();

// Cuts every client connection to the test server (pg_terminate_backend), as
// a server restart or a network failure would.
Status TerminatePgTestConnections();

}  // namespace tessera
