// The XML of the S3 API: a small parser (elements, text, entities, CDATA,
// comments; attributes and namespaces are read and dropped; no DTDs), the
// responses the S3 store reads and the request bodies it writes.
//
// Everything here is a pure function; malformed input gives kCorrupt, never
// a crash (nesting is limited, so hostile input cannot exhaust the stack).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "object/object_store.h"

namespace tessera {

struct XmlElement {
  std::string name;  // local name: a "prefix:" is dropped
  std::string text;  // the character data directly inside, entities decoded
  std::vector<XmlElement> children;

  const XmlElement* Child(std::string_view child_name) const;  // first one, or null
  std::string ChildText(std::string_view child_name) const;    // "" when absent
};

// Parses a whole document (one root element).
Result<XmlElement> ParseXml(std::string_view document);
// Escapes & < > " ' for element text.
std::string XmlEscape(std::string_view text);

// An <Error> body: Code and Message ("" when the body is not one).
struct S3Error {
  std::string code;
  std::string message;
  std::string bucket;    // BucketName, when given
  std::string endpoint;  // Endpoint, in a PermanentRedirect
};
S3Error ParseS3Error(std::string_view body);

// A ListObjectsV2 response. Keys are decoded when the response says
// EncodingType url (the store asks for it: any byte can be in a key, not
// every byte can be in XML).
struct ListV2Page {
  std::vector<ObjectInfo> objects;
  bool truncated = false;
  std::string next_token;  // NextContinuationToken
};
Result<ListV2Page> ParseListV2(std::string_view body);

// A DeleteObjects (POST ?delete) request body, quiet mode, and the keys
// its response reports as failed ("key: Code: Message" each).
Result<std::string> DeleteRequestXml(const std::vector<std::string>& keys);
Result<std::vector<std::string>> ParseDeleteErrors(std::string_view body);

// InitiateMultipartUpload's UploadId.
Result<std::string> ParseUploadId(std::string_view body);
// A CompleteMultipartUpload request body; etags[i] is part i + 1's ETag.
std::string CompleteMultipartXml(const std::vector<std::string>& etags);

// "%XX" and '+' (space) decoding, as in ListObjectsV2 with EncodingType url.
Result<std::string> UrlDecode(std::string_view s);
// ISO 8601 UTC ("2013-05-24T00:00:00.000Z") and HTTP dates ("Fri, 24 May
// 2013 00:00:00 GMT") to nanoseconds since the epoch; kCorrupt otherwise.
Result<int64_t> ParseIso8601(std::string_view s);
Result<int64_t> ParseHttpDate(std::string_view s);

}  // namespace tessera
