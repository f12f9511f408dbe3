// A small strict JSON (RFC 8259) reader for manifest.json: no third-party library is
// available offline, and the manifest is small, so clarity beats speed here.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace sam3::json {

class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Value() = default;
  static Value makeBool(bool value);
  static Value makeNumber(double value);
  static Value makeString(std::string value);
  static Value makeArray(std::vector<Value> items);
  // Keys are unique (the parser rejects duplicates) and kept in document order.
  static Value makeObject(std::vector<std::string> keys, std::vector<Value> values);

  Type type() const { return type_; }
  bool isNull() const { return type_ == Type::kNull; }
  bool isBool() const { return type_ == Type::kBool; }
  bool isNumber() const { return type_ == Type::kNumber; }
  bool isString() const { return type_ == Type::kString; }
  bool isArray() const { return type_ == Type::kArray; }
  bool isObject() const { return type_ == Type::kObject; }

  // Accessors throw std::logic_error on a type mismatch; callers check types first.
  bool asBool() const;
  double asNumber() const;
  const std::string& asString() const;
  const std::vector<Value>& items() const;
  const std::vector<std::string>& keys() const;
  // The member named `key` of an object, or nullptr.
  const Value* find(const std::string& key) const;

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<std::string> keys_;  // objects: member names, parallel to items_
  std::vector<Value> items_;       // arrays: elements; objects: member values
};

class ParseError : public std::runtime_error {
 public:
  ParseError(const std::string& message, size_t line, size_t column);
  size_t line() const { return line_; }
  size_t column() const { return column_; }

 private:
  size_t line_;
  size_t column_;
};

// Parses one complete JSON text. Rejects what RFC 8259 rejects (trailing commas, comments,
// leading zeros, NaN, unescaped control characters, invalid UTF-8, lone surrogates) and also
// duplicate object keys and nesting deeper than 256. Messages name line and column (1-based).
Value parse(const std::string& text);

}  // namespace sam3::json
