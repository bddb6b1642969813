#include "object/s3_xml.h"

#include <cctype>
#include <charconv>
#include <ctime>

namespace tessera {
namespace {

constexpr int kMaxDepth = 32;

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

bool IsNameChar(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return std::isalnum(u) || c == '_' || c == '-' || c == '.' || c == ':' || u >= 0x80;
}

class Parser {
 public:
  explicit Parser(std::string_view doc) : doc_(doc) {}

  Result<XmlElement> Document() {
    RETURN_IF_ERROR(SkipMisc());
    if (!Peek("<")) return Error("no root element");
    XmlElement root;
    RETURN_IF_ERROR(Element(&root, 0));
    RETURN_IF_ERROR(SkipMisc());
    if (pos_ != doc_.size()) return Error("content after the root element");
    return root;
  }

 private:
  Status Error(const std::string& what) const {
    return Corrupt("malformed XML at byte " + std::to_string(pos_) + ": " + what);
  }
  bool Peek(std::string_view s) const { return doc_.substr(pos_).starts_with(s); }
  void SkipSpace() {
    while (pos_ < doc_.size() && std::isspace(static_cast<unsigned char>(doc_[pos_]))) ++pos_;
  }
  // Moves past `end`, which must follow.
  Status SkipPast(std::string_view end) {
    size_t at = doc_.find(end, pos_);
    if (at == std::string_view::npos) return Error("unterminated construct");
    pos_ = at + end.size();
    return Status::Ok();
  }
  // Whitespace, comments and processing instructions (the XML declaration).
  Status SkipMisc() {
    while (true) {
      SkipSpace();
      if (Peek("<?")) {
        RETURN_IF_ERROR(SkipPast("?>"));
      } else if (Peek("<!--")) {
        RETURN_IF_ERROR(SkipPast("-->"));
      } else if (Peek("<!DOCTYPE")) {
        // No DTDs: an internal subset could define entities.
        size_t end = doc_.find('>', pos_);
        if (end == std::string_view::npos || doc_.substr(pos_, end - pos_).find('[') != doc_.npos) {
          return Error("DTDs are not supported");
        }
        pos_ = end + 1;
      } else {
        return Status::Ok();
      }
    }
  }
  Result<std::string> Name() {
    size_t start = pos_;
    while (pos_ < doc_.size() && IsNameChar(doc_[pos_])) ++pos_;
    if (pos_ == start) return Error("expected a name");
    return std::string(doc_.substr(start, pos_ - start));
  }
  // Decodes one "&...;" reference at pos_.
  Status Reference(std::string* out) {
    size_t semi = doc_.find(';', pos_);
    if (semi == std::string_view::npos || semi - pos_ > 12) return Error("bad entity reference");
    std::string_view ref = doc_.substr(pos_ + 1, semi - pos_ - 1);
    if (ref == "lt") out->push_back('<');
    else if (ref == "gt") out->push_back('>');
    else if (ref == "amp") out->push_back('&');
    else if (ref == "quot") out->push_back('"');
    else if (ref == "apos") out->push_back('\'');
    else if (ref.starts_with("#")) {
      bool hex = ref.starts_with("#x");
      std::string_view digits = ref.substr(hex ? 2 : 1);
      if (digits.empty()) return Error("empty character reference");
      uint32_t cp = 0;
      for (char c : digits) {
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return Error("bad character reference");
        cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(d);
        if (cp > 0x10ffff) return Error("character reference out of range");
      }
      if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff)) return Error("invalid character reference");
      AppendUtf8(cp, out);
    } else {
      return Error("unknown entity '&" + std::string(ref) + ";'");
    }
    pos_ = semi + 1;
    return Status::Ok();
  }
  Status Attributes() {
    while (true) {
      SkipSpace();
      if (pos_ >= doc_.size()) return Error("unterminated tag");
      if (doc_[pos_] == '>' || Peek("/>")) return Status::Ok();
      ASSIGN_OR_RETURN(std::string name, Name());
      SkipSpace();
      if (!Peek("=")) return Error("expected '=' after attribute " + name);
      ++pos_;
      SkipSpace();
      if (pos_ >= doc_.size() || (doc_[pos_] != '"' && doc_[pos_] != '\'')) {
        return Error("attribute value must be quoted");
      }
      char quote = doc_[pos_++];
      size_t end = doc_.find(quote, pos_);
      if (end == std::string_view::npos) return Error("unterminated attribute value");
      pos_ = end + 1;
    }
  }
  Status Element(XmlElement* el, int depth) {
    if (depth >= kMaxDepth) return Error("elements nested too deeply");
    ++pos_;  // '<'
    ASSIGN_OR_RETURN(std::string qname, Name());
    size_t colon = qname.rfind(':');
    el->name = colon == std::string::npos ? qname : qname.substr(colon + 1);
    RETURN_IF_ERROR(Attributes());
    if (Peek("/>")) {
      pos_ += 2;
      return Status::Ok();
    }
    ++pos_;  // '>'
    while (true) {
      if (pos_ >= doc_.size()) return Error("unterminated element <" + qname + ">");
      char c = doc_[pos_];
      if (c == '&') {
        RETURN_IF_ERROR(Reference(&el->text));
      } else if (c != '<') {
        el->text.push_back(c);
        ++pos_;
      } else if (Peek("</")) {
        pos_ += 2;
        ASSIGN_OR_RETURN(std::string end, Name());
        if (end != qname) return Error("</" + end + "> closes <" + qname + ">");
        SkipSpace();
        if (!Peek(">")) return Error("expected '>'");
        ++pos_;
        return Status::Ok();
      } else if (Peek("<![CDATA[")) {
        size_t start = pos_ + 9;
        size_t end = doc_.find("]]>", start);
        if (end == std::string_view::npos) return Error("unterminated CDATA");
        el->text.append(doc_.substr(start, end - start));
        pos_ = end + 3;
      } else if (Peek("<!--")) {
        RETURN_IF_ERROR(SkipPast("-->"));
      } else if (Peek("<?")) {
        RETURN_IF_ERROR(SkipPast("?>"));
      } else {
        el->children.emplace_back();
        RETURN_IF_ERROR(Element(&el->children.back(), depth + 1));
      }
    }
  }

  std::string_view doc_;
  size_t pos_ = 0;
};

// Days from 1970-01-01 to a civil date (proleptic Gregorian).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

Result<int64_t> ToNanos(std::string_view text, int y, int mo, int d, int h, int mi, int s,
                        int64_t frac_ns) {
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) {
    return Corrupt("invalid date '" + std::string(text) + "'");
  }
  int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  return ((days * 24 + h) * 60 + mi) * 60 * 1000000000LL + s * 1000000000LL + frac_ns;
}

}  // namespace

const XmlElement* XmlElement::Child(std::string_view child_name) const {
  for (const XmlElement& c : children) {
    if (c.name == child_name) return &c;
  }
  return nullptr;
}

std::string XmlElement::ChildText(std::string_view child_name) const {
  const XmlElement* c = Child(child_name);
  return c == nullptr ? "" : c->text;
}

Result<XmlElement> ParseXml(std::string_view document) { return Parser(document).Document(); }

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\r': out += "&#13;"; break;  // a raw CR would be read back as LF
      default: out.push_back(c);
    }
  }
  return out;
}

S3Error ParseS3Error(std::string_view body) {
  S3Error e;
  auto doc = ParseXml(body);
  if (!doc.ok() || doc->name != "Error") return e;
  e.code = doc->ChildText("Code");
  e.message = doc->ChildText("Message");
  e.bucket = doc->ChildText("BucketName");
  e.endpoint = doc->ChildText("Endpoint");
  return e;
}

Result<ListV2Page> ParseListV2(std::string_view body) {
  ASSIGN_OR_RETURN(XmlElement doc, ParseXml(body));
  if (doc.name != "ListBucketResult") {
    return Corrupt("expected a ListBucketResult, got <" + doc.name + ">");
  }
  const bool encoded = doc.ChildText("EncodingType") == "url";
  ListV2Page page;
  page.truncated = doc.ChildText("IsTruncated") == "true";
  page.next_token = doc.ChildText("NextContinuationToken");
  for (const XmlElement& c : doc.children) {
    if (c.name != "Contents") continue;
    ObjectInfo info;
    info.key = c.ChildText("Key");
    if (encoded) {
      ASSIGN_OR_RETURN(info.key, UrlDecode(info.key));
    }
    if (info.key.empty()) return Corrupt("a listed object has no key");
    const std::string size = c.ChildText("Size");
    auto [end, ec] = std::from_chars(size.data(), size.data() + size.size(), info.size);
    if (size.empty() || ec != std::errc() || end != size.data() + size.size()) {
      return Corrupt("object '" + info.key + "' has an invalid size '" + size + "'");
    }
    ASSIGN_OR_RETURN(info.mtime_ns, ParseIso8601(c.ChildText("LastModified")));
    if (!page.objects.empty() && info.key <= page.objects.back().key) {
      return Corrupt("listed keys are not in ascending order at '" + info.key + "'");
    }
    page.objects.push_back(std::move(info));
  }
  if (page.truncated && page.next_token.empty()) {
    return Corrupt("a truncated listing without NextContinuationToken");
  }
  return page;
}

Result<std::string> DeleteRequestXml(const std::vector<std::string>& keys) {
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete><Quiet>true</Quiet>";
  for (const std::string& key : keys) {
    for (char c : key) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u < 0x20 && c != '\t' && c != '\n' && c != '\r') {
        return Invalid("key '" + key + "' has a control character XML cannot carry");
      }
    }
    out += "<Object><Key>" + XmlEscape(key) + "</Key></Object>";
  }
  return out + "</Delete>";
}

Result<std::vector<std::string>> ParseDeleteErrors(std::string_view body) {
  ASSIGN_OR_RETURN(XmlElement doc, ParseXml(body));
  if (doc.name != "DeleteResult") return Corrupt("expected a DeleteResult, got <" + doc.name + ">");
  std::vector<std::string> errors;
  for (const XmlElement& c : doc.children) {
    if (c.name != "Error") continue;
    // Deleting an absent key is not a failure.
    if (c.ChildText("Code") == "NoSuchKey") continue;
    errors.push_back(c.ChildText("Key") + ": " + c.ChildText("Code") + ": " +
                     c.ChildText("Message"));
  }
  return errors;
}

Result<std::string> ParseUploadId(std::string_view body) {
  ASSIGN_OR_RETURN(XmlElement doc, ParseXml(body));
  std::string id = doc.ChildText("UploadId");
  if (doc.name != "InitiateMultipartUploadResult" || id.empty()) {
    return Corrupt("expected an InitiateMultipartUploadResult with an UploadId");
  }
  return id;
}

std::string CompleteMultipartXml(const std::vector<std::string>& etags) {
  std::string out = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags.size(); ++i) {
    out += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" +
           XmlEscape(etags[i]) + "</ETag></Part>";
  }
  return out + "</CompleteMultipartUpload>";
}

Result<std::string> UrlDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      if (i + 2 >= s.size()) {
        return Corrupt("truncated %-escape in '" + std::string(s) + "'");
      }
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return Corrupt("bad %-escape in '" + std::string(s) + "'");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

Result<int64_t> ParseIso8601(std::string_view s) {
  int y, mo, d, h, mi, sec;
  if (!Digits(s, 0, 4, &y) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, &mo) ||
      s[7] != '-' || !Digits(s, 8, 2, &d) || s[10] != 'T' || !Digits(s, 11, 2, &h) ||
      s[13] != ':' || !Digits(s, 14, 2, &mi) || s[16] != ':' || !Digits(s, 17, 2, &sec)) {
    return Corrupt("invalid time '" + std::string(s) + "'");
  }
  size_t pos = 19;
  int64_t frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    int64_t scale = 100000000;
    ++pos;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      frac += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
  }
  if (s.substr(pos) != "Z") return Corrupt("invalid time '" + std::string(s) + "'");
  return ToNanos(s, y, mo, d, h, mi, sec, frac);
}

Result<int64_t> ParseHttpDate(std::string_view s) {
  // "Fri, 24 May 2013 00:00:00 GMT"
  static constexpr std::string_view kMonths = "JanFebMarAprMayJunJulAugSepOctNovDec";
  int d, y, h, mi, sec;
  if (s.size() != 29 || s[3] != ',' || !Digits(s, 5, 2, &d) || !Digits(s, 12, 4, &y) ||
      !Digits(s, 17, 2, &h) || s[19] != ':' || !Digits(s, 20, 2, &mi) || s[22] != ':' ||
      !Digits(s, 23, 2, &sec) || s.substr(25) != " GMT") {
    return Corrupt("invalid HTTP date '" + std::string(s) + "'");
  }
  size_t m = kMonths.find(s.substr(8, 3));
  if (m == std::string_view::npos || m % 3 != 0) {
    return Corrupt("invalid HTTP date '" + std::string(s) + "'");
  }
  return ToNanos(s, y, static_cast<int>(m / 3) + 1, d, h, mi, sec, 0);
}

}  // namespace tessera
