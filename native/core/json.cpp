#include "json.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

namespace sam3::json {

Value Value::makeBool(bool value) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = value;
  return v;
}

Value Value::makeNumber(double value) {
  Value v;
  v.type_ = Type::kNumber;
  v.number_ = value;
  return v;
}

Value Value::makeString(std::string value) {
  Value v;
  v.type_ = Type::kString;
  v.string_ = std::move(value);
  return v;
}

Value Value::makeArray(std::vector<Value> items) {
  Value v;
  v.type_ = Type::kArray;
  v.items_ = std::move(items);
  return v;
}

Value Value::makeObject(std::vector<std::string> keys, std::vector<Value> values) {
  Value v;
  v.type_ = Type::kObject;
  v.keys_ = std::move(keys);
  v.items_ = std::move(values);
  return v;
}

bool Value::asBool() const {
  if (type_ != Type::kBool) throw std::logic_error("json: not a bool");
  return bool_;
}

double Value::asNumber() const {
  if (type_ != Type::kNumber) throw std::logic_error("json: not a number");
  return number_;
}

const std::string& Value::asString() const {
  if (type_ != Type::kString) throw std::logic_error("json: not a string");
  return string_;
}

const std::vector<Value>& Value::items() const {
  if (type_ != Type::kArray && type_ != Type::kObject) {
    throw std::logic_error("json: not an array or object");
  }
  return items_;
}

const std::vector<std::string>& Value::keys() const {
  if (type_ != Type::kObject) throw std::logic_error("json: not an object");
  return keys_;
}

const Value* Value::find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i] == key) return &items_[i];
  }
  return nullptr;
}

ParseError::ParseError(const std::string& message, size_t line, size_t column)
    : std::runtime_error("line " + std::to_string(line) + ", column " + std::to_string(column) +
                         ": " + message),
      line_(line),
      column_(column) {}

namespace {

constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(const std::string& text) : text_(text) {}

  Value parseDocument() {
    skipWhitespace();
    Value value = parseValue(0);
    skipWhitespace();
    if (pos_ != text_.size()) fail("unexpected content after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { failAt(message, pos_); }

  [[noreturn]] void failAt(const std::string& message, size_t offset) const {
    size_t line = 1;
    size_t column = 1;
    for (size_t i = 0; i < offset && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw ParseError(message, line, column);
  }

  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return atEnd() ? '\0' : text_[pos_]; }

  void skipWhitespace() {
    while (!atEnd()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expectLiteral(const char* literal) {
    size_t start = pos_;
    for (const char* p = literal; *p != '\0'; ++p) {
      if (atEnd() || text_[pos_] != *p) failAt("invalid literal", start);
      ++pos_;
    }
  }

  Value parseValue(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 256 levels");
    if (atEnd()) fail("unexpected end of input, expected a value");
    switch (peek()) {
      case '{':
        return parseObject(depth);
      case '[':
        return parseArray(depth);
      case '"':
        return Value::makeString(parseString());
      case 't':
        expectLiteral("true");
        return Value::makeBool(true);
      case 'f':
        expectLiteral("false");
        return Value::makeBool(false);
      case 'n':
        expectLiteral("null");
        return Value();
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parseNumber();
        fail(std::string("unexpected character '") + peek() + "', expected a value");
    }
  }

  Value parseObject(int depth) {
    ++pos_;  // '{'
    std::vector<std::string> keys;
    std::vector<Value> values;
    skipWhitespace();
    if (peek() == '}') {
      ++pos_;
      return Value::makeObject(std::move(keys), std::move(values));
    }
    while (true) {
      skipWhitespace();
      if (peek() != '"') fail("expected a string key");
      size_t keyStart = pos_;
      std::string key = parseString();
      for (const std::string& existing : keys) {
        if (existing == key) failAt("duplicate key \"" + key + "\"", keyStart);
      }
      skipWhitespace();
      if (peek() != ':') fail("expected ':' after an object key");
      ++pos_;
      skipWhitespace();
      values.push_back(parseValue(depth + 1));
      keys.push_back(std::move(key));
      skipWhitespace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return Value::makeObject(std::move(keys), std::move(values));
      }
      fail("expected ',' or '}' in an object");
    }
  }

  Value parseArray(int depth) {
    ++pos_;  // '['
    std::vector<Value> items;
    skipWhitespace();
    if (peek() == ']') {
      ++pos_;
      return Value::makeArray(std::move(items));
    }
    while (true) {
      skipWhitespace();
      items.push_back(parseValue(depth + 1));
      skipWhitespace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value::makeArray(std::move(items));
      }
      fail("expected ',' or ']' in an array");
    }
  }

  Value parseNumber() {
    size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
      if (peek() >= '0' && peek() <= '9') failAt("leading zeros are not allowed", start);
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("expected a digit");
    }
    if (peek() == '.') {
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit in the exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    double value = 0;
    // from_chars is locale-independent, unlike strtod.
    auto result = std::from_chars(text_.data() + start, text_.data() + pos_, value);
    if (result.ec != std::errc() || !std::isfinite(value)) {
      failAt("number out of range", start);
    }
    return Value::makeNumber(value);
  }

  unsigned parseHex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      if (atEnd()) fail("unexpected end of input in a \\u escape");
      char c = text_[pos_];
      code <<= 4;
      if (c >= '0' && c <= '9') {
        code |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        code |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        code |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail("invalid hex digit in a \\u escape");
      }
      ++pos_;
    }
    return code;
  }

  static void appendUtf8(std::string& out, uint32_t code) {
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code >> 6)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (code >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (code >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  // Copies one UTF-8 encoded character, rejecting overlong forms, surrogates and values past
  // U+10FFFF.
  void copyUtf8Sequence(std::string& out) {
    size_t start = pos_;
    auto byte = [&](size_t i) { return static_cast<unsigned char>(text_[start + i]); };
    unsigned char lead = byte(0);
    size_t length = 0;
    uint32_t code = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      code = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      code = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      code = lead & 0x07;
    } else {
      fail("invalid UTF-8");
    }
    if (start + length > text_.size()) fail("invalid UTF-8");
    for (size_t i = 1; i < length; ++i) {
      if ((byte(i) & 0xC0) != 0x80) fail("invalid UTF-8");
      code = (code << 6) | (byte(i) & 0x3F);
    }
    if ((length == 3 && code < 0x800) || (length == 4 && code < 0x10000) || code > 0x10FFFF ||
        (code >= 0xD800 && code <= 0xDFFF)) {
      fail("invalid UTF-8");
    }
    out.append(text_, start, length);
    pos_ += length;
  }

  std::string parseString() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (atEnd()) fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("unescaped control character in a string");
      if (c >= 0x80) {
        copyUtf8Sequence(out);
        continue;
      }
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (atEnd()) fail("unterminated escape");
      char escape = text_[pos_++];
      switch (escape) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          uint32_t code = parseHex4();
          if (code >= 0xDC00 && code <= 0xDFFF) fail("lone low surrogate in a \\u escape");
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (pos_ + 1 >= text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
              fail("high surrogate not followed by a low surrogate");
            }
            pos_ += 2;
            uint32_t low = parseHex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("high surrogate not followed by a low one");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          appendUtf8(out, code);
          break;
        }
        default:
          --pos_;
          fail(std::string("invalid escape '\\") + escape + "'");
      }
    }
  }

  const std::string& text_;
  size_t pos_ = 0;
};

}  // namespace

Value parse(const std::string& text) { return Parser(text).parseDocument(); }

}  // namespace sam3::json
