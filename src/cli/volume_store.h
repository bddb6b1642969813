// The one place that turns a volume's settings into the object store its
// blocks go through (mount, compact, format, objbench):
//
//   Compress(Encrypt(Retry(backend)))
//
// with only the layers the settings ask for (and no Retry over S3, which
// retries by itself). Compression sits above
// encryption because encrypted bytes do not compress. The encryption key
// management lives here too: the RSA key in the settings is unlocked with
// the passphrase in TESSERA_RSA_PASSPHRASE to unwrap the data key.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "meta/settings.h"
#include "object/object_store.h"

namespace tessera {

// Where the passphrase of a protected RSA key comes from, at format and mount.
inline constexpr const char* kPassphraseEnv = "TESSERA_RSA_PASSPHRASE";

// A layer put between the retrying backend and the transforms: mount puts
// its writeback staging there, so that staged blocks are already
// compressed and encrypted.
using StoreLayer =
    std::function<Result<std::unique_ptr<ObjectStore>>(std::unique_ptr<ObjectStore>)>;

// The store of a volume. The data key is unwrapped first, so that a wrong
// or missing passphrase (kPermission, one line naming kPassphraseEnv) fails
// before anything is opened. Errors of the backend carry the bucket.
Result<std::unique_ptr<ObjectStore>> OpenVolumeStore(const VolumeSettings& s,
                                                     const StoreLayer& middle = nullptr);

// Makes `s` an encrypted volume: loads the RSA private key in the PEM file
// at `path` (passphrase from kPassphraseEnv), makes a random data key and
// stores the PEM as given and the wrapped data key in `s`. One-line errors
// for an unreadable file, a file that is not an RSA private key, or a wrong
// or missing passphrase.
Status SetUpEncryption(const std::string& path, VolumeSettings* s);

// How the volume is encrypted, for `tessera status` and messages, never
// the key itself: "none", or e.g. "aes-256-gcm, data key wrapped by
// rsa-2048, passphrase-protected".
std::string DescribeEncryption(const VolumeSettings& s);

}  // namespace tessera
