// A small command-line parser for subcommands: "--name value", "--name=value",
// boolean flags, short aliases, and positional arguments. Unknown options and
// missing values are errors with a one-line message.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace tessera {

class Args {
 public:
  // Declares an option taking a value ("--bucket DIR"), or a boolean flag.
  void Value(const std::string& name, const std::string& alias = "");
  void Flag(const std::string& name, const std::string& alias = "");
  // Parses argv[first..argc). "--help"/"-h" sets help().
  Status Parse(int argc, char** argv, int first);

  bool help() const { return help_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  std::string Get(const std::string& name, const std::string& fallback) const;
  // A whole number in [least, most] ("--name N"), or `fallback` when absent;
  // kInvalid with a one-line message naming the option otherwise.
  Result<uint64_t> GetCount(const std::string& name, uint64_t fallback, uint64_t least,
                            uint64_t most) const;
  // A size ("128K", "4M", "1G" or bytes) in [least, most], likewise.
  Result<uint64_t> GetSize(const std::string& name, uint64_t fallback, uint64_t least,
                           uint64_t most) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::set<std::string> value_options_, flag_options_;
  std::map<std::string, std::string> aliases_;  // "-d" -> "background"
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace tessera
