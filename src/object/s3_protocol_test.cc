// The pieces of the S3 store that need no server: Signature V4 (against
// AWS's published examples), bucket URLs, and the XML it reads and writes.
#include <gtest/gtest.h>

#include "object/s3_sign.h"
#include "object/s3_url.h"
#include "object/s3_xml.h"

namespace tessera {
namespace {

// The examples of "Signature Calculations for the Authorization Header:
// Transferring Payload in a Single Chunk (AWS Signature Version 4)" in the
// Amazon S3 API reference: bucket examplebucket in us-east-1, at
// 20130524T000000Z, with AWS's documentation keys.
const SigV4Credentials kAwsExampleKeys{"AKIAIOSFODNN7EXAMPLE",
                                       "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
constexpr const char* kExampleDate = "20130524T000000Z";

TEST(SigV4Test, AwsGetObjectExample) {
  SigV4Request req;
  req.method = "GET";
  req.canonical_uri = "/test.txt";
  req.payload_hash = std::string(kEmptySha256);
  req.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
                 {"Range", "bytes=0-9"},
                 {"x-amz-content-sha256", std::string(kEmptySha256)},
                 {"x-amz-date", kExampleDate}};
  SigV4Signature sig = SignV4(req, kAwsExampleKeys, "us-east-1", "s3", kExampleDate);
  EXPECT_EQ(sig.canonical_request,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sig.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(sig.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(sig.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4Test, AwsPutObjectExample) {
  const std::string body = "Welcome to Amazon S3.";
  SigV4Request req;
  req.method = "PUT";
  req.canonical_uri = "/" + UriEncode("test$file.text", true);
  EXPECT_EQ(req.canonical_uri, "/test%24file.text");
  req.payload_hash = Sha256Hex(body);
  EXPECT_EQ(req.payload_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  req.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
                 {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                 {"x-amz-date", kExampleDate},
                 {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                 {"x-amz-content-sha256", req.payload_hash}};
  SigV4Signature sig = SignV4(req, kAwsExampleKeys, "us-east-1", "s3", kExampleDate);
  EXPECT_EQ(sig.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(SigV4Test, AwsListObjectsAndLifecycleExamples) {
  SigV4Request req;
  req.method = "GET";
  req.canonical_uri = "/";
  req.payload_hash = std::string(kEmptySha256);
  req.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
                 {"x-amz-date", kExampleDate},
                 {"x-amz-content-sha256", std::string(kEmptySha256)}};
  req.query = {{"prefix", "J"}, {"max-keys", "2"}};  // sorted by the signer
  EXPECT_EQ(SignV4(req, kAwsExampleKeys, "us-east-1", "s3", kExampleDate).signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
  req.query = {{"lifecycle", ""}};  // a parameter without a value signs as "lifecycle="
  EXPECT_EQ(SignV4(req, kAwsExampleKeys, "us-east-1", "s3", kExampleDate).signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST(SigV4Test, EncodingAndHashes) {
  EXPECT_EQ(UriEncode("a b/c~d_e.f-g", true), "a%20b/c~d_e.f-g");
  EXPECT_EQ(UriEncode("a b/c", false), "a%20b%2Fc");
  EXPECT_EQ(UriEncode("z\xc3\xa9+=&", true), "z%C3%A9%2B%3D%26");
  EXPECT_EQ(CanonicalQuery({{"b", "2"}, {"a", "x y"}, {"delete", ""}}), "a=x%20y&b=2&delete=");
  EXPECT_EQ(Sha256Hex(""), kEmptySha256);
  EXPECT_EQ(Md5Base64(""), "1B2M2Y8AsgTpgAmY7PhCfg==");
  EXPECT_EQ(AmzDate(1369353600), "20130524T000000Z");
  // RFC 4231 test case 2.
  std::string mac = HmacSha256("Jefe", "what do ya want for nothing?");
  ASSERT_EQ(mac.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(mac[0]), 0x5b);
  EXPECT_EQ(static_cast<unsigned char>(mac[31]), 0x43);
}

TEST(S3UrlTest, PathStyle) {
  auto loc = ParseS3Url("http://127.0.0.1:9000/my-bucket");
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_FALSE(loc->virtual_hosted);
  EXPECT_EQ(loc->scheme, "http");
  EXPECT_EQ(loc->host, "127.0.0.1");
  EXPECT_EQ(loc->port, 9000);
  EXPECT_EQ(loc->bucket, "my-bucket");
  EXPECT_EQ(loc->region, "");
  EXPECT_EQ(loc->HostHeader(), "127.0.0.1:9000");
  EXPECT_EQ(loc->Path("a b/c"), "/my-bucket/a%20b/c");
  EXPECT_EQ(loc->Path(""), "/my-bucket");
  EXPECT_EQ(loc->Url(), "http://127.0.0.1:9000/my-bucket");

  loc = ParseS3Url("HTTPS://LocalHost/bkt.with.dots/");
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_EQ(loc->scheme, "https");
  EXPECT_EQ(loc->host, "localhost");
  EXPECT_EQ(loc->port, 0);
  EXPECT_EQ(loc->bucket, "bkt.with.dots");
  EXPECT_EQ(loc->HostHeader(), "localhost");
  EXPECT_EQ(loc->Url(), "https://localhost/bkt.with.dots");

  loc = ParseS3Url("https://s3.eu-west-3.amazonaws.com/data-lake");
  ASSERT_TRUE(loc.ok());
  EXPECT_FALSE(loc->virtual_hosted);
  EXPECT_EQ(loc->region, "eu-west-3");

  loc = ParseS3Url("http://[::1]:9000/abc");
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_EQ(loc->host, "[::1]");
  EXPECT_EQ(loc->HostHeader(), "[::1]:9000");
}

TEST(S3UrlTest, VirtualHostedAndRegions) {
  auto loc = ParseS3Url("https://my-bucket.s3.us-west-2.amazonaws.com");
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_TRUE(loc->virtual_hosted);
  EXPECT_EQ(loc->bucket, "my-bucket");
  EXPECT_EQ(loc->host, "my-bucket.s3.us-west-2.amazonaws.com");
  EXPECT_EQ(loc->region, "us-west-2");
  EXPECT_EQ(loc->Path("k/x"), "/k/x");
  EXPECT_EQ(loc->Path(""), "/");
  EXPECT_EQ(loc->Url(), "https://my-bucket.s3.us-west-2.amazonaws.com");

  EXPECT_EQ(ParseS3Url("https://b12.s3.amazonaws.com/")->region, "us-east-1");
  EXPECT_EQ(ParseS3Url("https://b12.s3-ap-south-1.amazonaws.com")->region, "ap-south-1");
  EXPECT_EQ(ParseS3Url("https://b12.s3.dualstack.sa-east-1.amazonaws.com")->region, "sa-east-1");
  EXPECT_EQ(ParseS3Url("https://b12.s3.cn-north-1.amazonaws.com.cn")->region, "cn-north-1");
  EXPECT_EQ(ParseS3Url("https://b12.minio.example.com:9443")->region, "");
  EXPECT_EQ(ParseS3Url("https://b12.minio.example.com:9443")->HostHeader(),
            "b12.minio.example.com:9443");
}

TEST(S3UrlTest, BadUrlsAreInvalid) {
  for (const char* url : {"", "s3://bucket", "ftp://host/bucket", "http://", "http:///bucket",
                          "http://127.0.0.1:9000", "http://localhost/", "http://[::1]:9000/",
                          "http://host:/bucket", "http://host:0/bucket", "http://host:65536/bucket",
                          "http://host:9x/bucket", "http://host/bucket/sub", "http://host/bucket?x=1",
                          "http://host/bucket#f", "http://user:pw@host/bucket", "http://host/ab",
                          "http://host/Upper", "http://host/under_score", "http://host/-bkt",
                          "http://ho st/bucket", "http://[::1/bucket"}) {
    auto loc = ParseS3Url(url);
    EXPECT_FALSE(loc.ok()) << url;
    if (!loc.ok()) {
      EXPECT_EQ(loc.status().code(), StatusCode::kInvalid) << url;
      EXPECT_NE(loc.status().message().find(std::string("'") + url + "'"), std::string::npos)
          << loc.status().message();
    }
  }
  EXPECT_NE(ParseS3Url("http://u:p@h/bucket").status().message().find("--access-key"),
            std::string::npos);
}

TEST(S3XmlTest, ParsesElementsEntitiesAndCdata) {
  auto doc = ParseXml(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n"
      "<r:Root xmlns:r=\"urn:x\" a='1'><A>x &lt;&amp;&gt; &quot;&apos; &#65;&#x42;&#xe9;</A>"
      "<B/><B>2</B><C><![CDATA[<not> &a tag]]></C><!-- inside --></r:Root>  ");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  EXPECT_EQ(doc->name, "Root");
  EXPECT_EQ(doc->ChildText("A"), "x <&> \"' AB\xc3\xa9");
  EXPECT_EQ(doc->children.size(), 4u);
  EXPECT_EQ(doc->ChildText("B"), "");  // the first <B>
  EXPECT_EQ(doc->ChildText("C"), "<not> &a tag");
  EXPECT_EQ(doc->ChildText("Nope"), "");
  EXPECT_EQ(doc->Child("Nope"), nullptr);
}

TEST(S3XmlTest, MalformedXmlIsCorruptNotACrash) {
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += "<a>";
  for (const std::string& bad :
       {std::string(""), std::string("text"), std::string("<a>"), std::string("<a></b>"),
        std::string("<a>&bogus;</a>"), std::string("<a>&#xZZ;</a>"), std::string("<a b=1/>"),
        std::string("<a/><b/>"), std::string("<a><![CDATA[x</a>"), std::string("<a>&#0;</a>"),
        std::string("<!DOCTYPE a [<!ENTITY x 'y'>]><a/>"), std::string("<a>&amp</a>"), deep}) {
    auto doc = ParseXml(bad);
    EXPECT_FALSE(doc.ok()) << bad.substr(0, 40);
    if (!doc.ok()) {
      EXPECT_EQ(doc.status().code(), StatusCode::kCorrupt);
    }
  }
}

TEST(S3XmlTest, ListV2WithContinuationAndEncodedKeys) {
  auto page = ParseListV2(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<Name>bkt</Name><Prefix>a%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>"
      "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
      "<ContinuationToken>t0</ContinuationToken>"
      "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
      "<Contents><Key>a/b+c%2Bd</Key><LastModified>2013-05-24T00:00:00.000Z</LastModified>"
      "<ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>"
      "<Contents><Key>a/z%C3%A9%01</Key><LastModified>2013-05-24T00:00:01.5Z</LastModified>"
      "<Size>0</Size></Contents>"
      "<Contents><Key>a/%7E%26%3C</Key><LastModified>2013-05-24T00:00:02Z</LastModified>"
      "<Size>18446744073709551615</Size></Contents>"
      "</ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
  ASSERT_EQ(page->objects.size(), 3u);
  EXPECT_EQ(page->objects[0].key, "a/b c+d");
  EXPECT_EQ(page->objects[0].size, 12u);
  EXPECT_EQ(page->objects[0].mtime_ns, 1369353600LL * 1000000000);
  EXPECT_EQ(page->objects[1].key, "a/z\xc3\xa9\x01");
  EXPECT_EQ(page->objects[1].mtime_ns, 1369353601LL * 1000000000 + 500000000);
  EXPECT_EQ(page->objects[2].key, "a/~&<");
  EXPECT_EQ(page->objects[2].size, 18446744073709551615ull);

  // Without EncodingType, keys are taken as they are (entities decoded).
  page = ParseListV2(
      "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a&amp;b%20</Key>"
      "<LastModified>2013-05-24T00:00:00Z</LastModified><Size>1</Size></Contents>"
      "</ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_FALSE(page->truncated);
  ASSERT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->objects[0].key, "a&b%20");

  page = ParseListV2("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->objects.empty());
}

TEST(S3XmlTest, BadListingsAreCorrupt) {
  const std::string ok_obj = "<LastModified>2013-05-24T00:00:00Z</LastModified><Size>1</Size>";
  for (const std::string& bad : std::vector<std::string>{
           std::string("<Error><Code>x</Code></Error>"),
           // truncated, and with no token to go on
           std::string("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>"),
           "<ListBucketResult><Contents><Key>b</Key>" + ok_obj + "</Contents><Contents><Key>a</Key>" +
               ok_obj + "</Contents></ListBucketResult>",
           std::string("<ListBucketResult><Contents><Key>a</Key><Size>-1</Size>"
                       "<LastModified>2013-05-24T00:00:00Z</LastModified></Contents>"
                       "</ListBucketResult>"),
           std::string("<ListBucketResult><Contents><Key>a</Key><Size>1</Size>"
                       "<LastModified>yesterday</LastModified></Contents></ListBucketResult>"),
           "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%G1</Key>" + ok_obj +
               "</Contents></ListBucketResult>",
           // a listing cut short
           "<ListBucketResult><Contents><Key>a</Key>" + ok_obj}) {
    auto page = ParseListV2(bad);
    EXPECT_FALSE(page.ok()) << bad;
    if (!page.ok()) {
      EXPECT_EQ(page.status().code(), StatusCode::kCorrupt) << bad;
    }
  }
}

TEST(S3XmlTest, ErrorsDeletesAndMultipart) {
  S3Error e = ParseS3Error(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket "
      "does not exist</Message><BucketName>bkt</BucketName></Error>");
  EXPECT_EQ(e.code, "NoSuchBucket");
  EXPECT_EQ(e.message, "The specified bucket does not exist");
  EXPECT_EQ(e.bucket, "bkt");
  EXPECT_EQ(ParseS3Error("<Error><Code>PermanentRedirect</Code><Endpoint>b.s3.eu-west-1."
                         "amazonaws.com</Endpoint></Error>").endpoint,
            "b.s3.eu-west-1.amazonaws.com");
  EXPECT_EQ(ParseS3Error("").code, "");
  EXPECT_EQ(ParseS3Error("<html>oops</html>").code, "");

  auto body = DeleteRequestXml({"a&b", "c<d>\"'", "e\rf"});
  ASSERT_TRUE(body.ok());
  EXPECT_NE(body->find("<Quiet>true</Quiet>"), std::string::npos);
  EXPECT_NE(body->find("<Key>a&amp;b</Key>"), std::string::npos);
  EXPECT_NE(body->find("<Key>c&lt;d&gt;&quot;&apos;</Key>"), std::string::npos);
  EXPECT_NE(body->find("<Key>e&#13;f</Key>"), std::string::npos);
  // What is written reads back as the same keys.
  auto parsed = ParseXml(*body);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->children.size(), 4u);
  EXPECT_EQ(parsed->children[3].ChildText("Key"), "e\rf");
  EXPECT_EQ(DeleteRequestXml({"bad\x01key"}).status().code(), StatusCode::kInvalid);

  auto errors = ParseDeleteErrors(
      "<DeleteResult><Deleted><Key>x</Key></Deleted><Error><Key>y</Key><Code>AccessDenied</Code>"
      "<Message>Access Denied</Message></Error><Error><Key>z</Key><Code>NoSuchKey</Code>"
      "</Error></DeleteResult>");
  ASSERT_TRUE(errors.ok());
  EXPECT_EQ(*errors, std::vector<std::string>{"y: AccessDenied: Access Denied"});
  EXPECT_FALSE(ParseDeleteErrors("<DeleteResult>").ok());

  auto id = ParseUploadId(
      "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>VXBsb2FkIElE"
      "</UploadId></InitiateMultipartUploadResult>");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "VXBsb2FkIElE");
  EXPECT_FALSE(ParseUploadId("<InitiateMultipartUploadResult/>").ok());
  EXPECT_EQ(CompleteMultipartXml({"\"e1\"", "\"e2\""}),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag>"
            "</Part><Part><PartNumber>2</PartNumber><ETag>&quot;e2&quot;</ETag></Part>"
            "</CompleteMultipartUpload>");
}

TEST(S3XmlTest, Dates) {
  EXPECT_EQ(*ParseHttpDate("Fri, 24 May 2013 00:00:00 GMT"), 1369353600LL * 1000000000);
  EXPECT_EQ(*ParseHttpDate("Thu, 01 Jan 1970 00:00:01 GMT"), 1000000000LL);
  EXPECT_EQ(*ParseIso8601("2000-02-29T12:34:56Z"), 951827696LL * 1000000000);
  EXPECT_FALSE(ParseHttpDate("Fri, 24 Maz 2013 00:00:00 GMT").ok());
  EXPECT_FALSE(ParseHttpDate("").ok());
  EXPECT_FALSE(ParseIso8601("2013-13-24T00:00:00Z").ok());
  EXPECT_FALSE(ParseIso8601("2013-05-24T00:00:00").ok());
  EXPECT_EQ(*UrlDecode("a%2Fb+c"), "a/b c");
  EXPECT_FALSE(UrlDecode("a%2").ok());
  EXPECT_FALSE(UrlDecode("%").ok());
}

}  // namespace
}  // namespace tessera
