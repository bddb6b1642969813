#include "cli/args.h"

#include "common/units.h"

namespace tessera {

void Args::Value(const std::string& name, const std::string& alias) {
  value_options_.insert(name);
  if (!alias.empty()) aliases_[alias] = name;
}

void Args::Flag(const std::string& name, const std::string& alias) {
  flag_options_.insert(name);
  if (!alias.empty()) aliases_[alias] = name;
}

Status Args::Parse(int argc, char** argv, int first) {
  bool options_done = false;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    std::string name, value;
    bool has_value = false;
    if (auto alias = aliases_.find(arg); alias != aliases_.end()) {
      name = alias->second;
    } else if (arg.rfind("--", 0) == 0) {
      name = arg.substr(2);
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
    } else {
      return Invalid("unknown option '" + arg + "' (see --help)");
    }
    if (flag_options_.count(name)) {
      if (has_value) return Invalid("option --" + name + " takes no value");
      values_[name] = "true";
    } else if (value_options_.count(name)) {
      if (!has_value) {
        if (i + 1 >= argc) return Invalid("option --" + name + " needs a value");
        value = argv[++i];
      }
      values_[name] = value;
    } else {
      return Invalid("unknown option '" + arg + "' (see --help)");
    }
  }
  return Status::Ok();
}

std::optional<std::string> Args::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  return Get(name).value_or(fallback);
}

Result<uint64_t> Args::GetCount(const std::string& name, uint64_t fallback, uint64_t least,
                                uint64_t most) const {
  auto v = Get(name);
  if (!v) return fallback;
  auto n = ParseUint(*v, "--" + name);
  if (!n.ok() || *n < least || *n > most) {
    return Invalid("--" + name + " must be " + std::to_string(least) + " to " +
                   std::to_string(most) + ", not '" + *v + "'");
  }
  return *n;
}

Result<uint64_t> Args::GetSize(const std::string& name, uint64_t fallback, uint64_t least,
                               uint64_t most) const {
  auto v = Get(name);
  if (!v) return fallback;
  auto size = ParseSize(*v);
  if (!size.ok() || *size < least || *size > most) {
    return Invalid("--" + name + " must be a size from " + FormatBytes(least) + " to " +
                   FormatBytes(most) + " (e.g. 128K, 4M, 1G), not '" + *v + "'");
  }
  return *size;
}

}  // namespace tessera
