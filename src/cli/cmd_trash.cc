// tessera trash: list the trash of a volume and restore entries from it.
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/units.h"
#include "kv/kv.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera trash list META-URL [PATTERN]
       tessera trash restore META-URL [PATTERN]

With the trash on (tessera format --trash-days N, default 1), deleted files
and directories are kept in .trash/YYYY-MM-DD-HH/ at the volume's root (the
hour of the deletion, UTC) for N days, then deleted by a mount. The trash
is read-only; root may delete from it for good.

  list      print the entries in the trash: hour of deletion, type, size
            and the path each had
  restore   put entries back at the paths they had, parents first,
            creating missing directories; an entry whose path is taken now
            stays in the trash (and the command exits 1)

PATTERN is a shell pattern matched against the path an entry had, as in
'/data/run7/*' or '*.ckpt' ('*' also matches '/'); without it, every entry.
)";

char TypeLetter(uint32_t mode) {
  if (S_ISDIR(mode)) return 'd';
  if (S_ISLNK(mode)) return 'l';
  if (S_ISREG(mode)) return '-';
  return '?';
}

}  // namespace

int RunTrash(int argc, char** argv) {
  Args args;
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("trash", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  const auto& pos = args.positional();
  if (pos.size() < 2 || pos.size() > 3 || (pos[0] != "list" && pos[0] != "restore")) {
    std::fprintf(stderr, "tessera trash: expected list|restore META-URL [PATTERN] (see --help)\n");
    return 2;
  }
  const bool restore = pos[0] == "restore";
  const std::string pattern = pos.size() == 3 ? pos[2] : "*";
  auto kv = OpenKv(pos[1]);
  if (!kv.ok()) return Fail("trash", kv.status());
  auto meta = Meta::Open(std::move(*kv));
  if (!meta.ok()) return Fail("trash", meta.status());

  std::vector<TrashItem> items;
  uint64_t bytes = 0;
  Status listed = (*meta)->ListTrash([&](const TrashItem& item) {
    if (fnmatch(pattern.c_str(), item.origin.c_str(), 0) != 0) return Status::Ok();
    if (!restore) {
      std::printf("%s  %c %12llu  %s\n", item.hour.c_str(), TypeLetter(item.attr.mode),
                  static_cast<unsigned long long>(item.attr.length),
                  item.origin.empty() ? ("(unknown) " + item.name).c_str() : item.origin.c_str());
    }
    if (S_ISREG(item.attr.mode)) bytes += item.attr.length;
    items.push_back(item);
    return Status::Ok();
  });
  if (!listed.ok()) return Fail("trash", listed);
  if (!restore) {
    std::printf("%zu entries, %s\n", items.size(), FormatBytes(bytes).c_str());
    return 0;
  }
  // Parents before their children: a directory restored first is where its
  // entries go back to.
  std::stable_sort(items.begin(), items.end(), [](const TrashItem& a, const TrashItem& b) {
    return std::count(a.origin.begin(), a.origin.end(), '/') <
           std::count(b.origin.begin(), b.origin.end(), '/');
  });
  const Context ctx{static_cast<uint32_t>(geteuid()), static_cast<uint32_t>(getegid()),
                    static_cast<uint32_t>(getpid())};
  size_t restored = 0, failed = 0;
  for (const TrashItem& item : items) {
    std::string to;
    Status st = (*meta)->RestoreFromTrash(ctx, item, &to);
    if (st.ok()) {
      std::printf("restored %s\n", to.c_str());
      restored++;
    } else {
      std::fprintf(stderr, "tessera trash: %s stays in the trash: %s\n",
                   item.origin.empty() ? item.name.c_str() : item.origin.c_str(),
                   st.ToString().c_str());
      failed++;
    }
  }
  std::printf("%zu restored, %zu left in the trash\n", restored, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace tessera
