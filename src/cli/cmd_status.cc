#include <cstdio>
#include <ctime>
#include <map>
#include <utility>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/volume_store.h"
#include "common/units.h"
#include "kv/kv.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera status [--more] META-URL

Print the volume's settings, usage and live client sessions as JSON.
Usage counts what the volume holds and what waits for background work:
  used_space, used_inodes        as df shows them (the trash included)
  trash_entries, trash_files,    what the trash holds (files keep their
  trash_bytes                    space until the trash lets them go)
  pending_deleted_files, _bytes  files whose last name went, not deleted
                                 yet (queued, or held open by a mount)
  pending_deleted_slices         slices whose last reference went and
                                 whose blocks are being deleted, plus
                                 slices replaced by compaction waiting out
                                 their grace period
  fragmented_chunks,             with --more (reads every chunk record):
  slices_to_compact              chunks of more than one slice, and their
                                 slice records
Sessions of mounts with --writeback show their staging directory and how
many written blocks (bytes) wait there for upload; usage sums them.
)";

std::string FormatTime(int64_t ns) {
  std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm;
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S%z", &tm);
  return buf;
}

}  // namespace

int RunStatus(int argc, char** argv) {
  Args args;
  args.Flag("more");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("status", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) return Fail("status", "expected META-URL (see --help)");
  auto kv = OpenKv(args.positional()[0]);
  if (!kv.ok()) return Fail("status", kv.status());
  auto meta = Meta::Open(std::move(*kv));
  if (!meta.ok()) return Fail("status", meta.status());
  auto stats = (*meta)->StatFs();
  if (!stats.ok()) return Fail("status", stats.status());
  auto sessions = Meta::ListSessions((*meta)->kv());
  if (!sessions.ok()) return Fail("status", sessions.status());

  const VolumeSettings& s = (*meta)->settings();
  nlohmann::ordered_json out;
  out["setting"] = nlohmann::ordered_json::parse(s.ToJson());
  // Say how the volume is encrypted, never with what.
  out["setting"].erase("encrypt_rsa_key");
  out["setting"].erase("encrypt_data_key");
  out["setting"]["encryption"] = DescribeEncryption(s);
  // S3 secrets are shown as present, never as they are.
  for (const char* secret : {"secret_key", "session_token"}) {
    if (out["setting"].contains(secret)) out["setting"][secret] = "removed";
  }
  out["usage"] = {{"used_space", stats->used_space},
                  {"used_space_human", FormatBytes(stats->used_space)},
                  {"used_inodes", stats->used_inodes}};
  auto pending = (*meta)->CountPending(args.Has("more"));
  if (!pending.ok()) return Fail("status", pending.status());
  out["usage"]["trash_entries"] = pending->trash_entries;
  out["usage"]["trash_files"] = pending->trash_files;
  out["usage"]["trash_bytes"] = pending->trash_bytes;
  out["usage"]["pending_deleted_files"] = pending->deleted_files;
  out["usage"]["pending_deleted_bytes"] = pending->deleted_file_bytes;
  out["usage"]["pending_deleted_slices"] = pending->freed_slices + pending->delayed_slices;
  if (args.Has("more")) {
    out["usage"]["fragmented_chunks"] = pending->fragmented_chunks;
    out["usage"]["slices_to_compact"] = pending->fragmented_records;
  }
  // Blocks written with --writeback and not uploaded yet, by staging
  // directory: a session that took a directory over (the highest id on that
  // host) reports for it; earlier sessions there ended without cleaning up.
  std::map<std::pair<std::string, std::string>, uint64_t> staging_owner;
  for (const SessionRecord& r : *sessions) {
    if (r.info.staging_dir.empty()) continue;
    uint64_t& owner = staging_owner[{r.info.host, r.info.staging_dir}];
    owner = std::max(owner, r.id.value());
  }
  uint64_t pending_blocks = 0, pending_bytes = 0;
  out["sessions"] = nlohmann::ordered_json::array();
  for (const SessionRecord& r : *sessions) {
    out["sessions"].push_back({{"sid", r.id.value()},
                               {"host", r.info.host},
                               {"pid", r.info.pid},
                               {"mount_point", r.info.mount_point},
                               {"version", r.info.version},
                               {"heartbeat", FormatTime(r.heartbeat_ns)},
                               {"stale", Meta::IsStale(r, NowNanos())}});
    if (r.info.staging_dir.empty()) continue;
    auto& j = out["sessions"].back();
    j["staging_dir"] = r.info.staging_dir;
    const uint64_t owner = staging_owner[{r.info.host, r.info.staging_dir}];
    if (owner != r.id.value()) {
      j["staging_taken_over_by"] = owner;
      continue;
    }
    j["blocks_pending_upload"] = r.info.pending_uploads;
    j["bytes_pending_upload"] = r.info.pending_upload_bytes;
    pending_blocks += r.info.pending_uploads;
    pending_bytes += r.info.pending_upload_bytes;
  }
  out["usage"]["blocks_pending_upload"] = pending_blocks;
  out["usage"]["bytes_pending_upload"] = pending_bytes;
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace tessera
