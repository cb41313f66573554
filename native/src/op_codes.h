// Generated from src/core/ops/native_codes.ts by `npm run gen:codes`: do not edit by hand.
#pragma once

enum UnaryCode {
  UNARY_NEG = 0,
  UNARY_ABS = 1,
  UNARY_EXP = 2,
  UNARY_LOG = 3,
  UNARY_SQRT = 4,
  UNARY_RECIPROCAL = 5,
  UNARY_TANH = 6,
  UNARY_SIGMOID = 7,
  UNARY_RELU = 8,
  UNARY_LEAKY_RELU = 9,
  UNARY_GELU = 10,
  UNARY_GELU_TANH = 11,
  UNARY_ERF = 12,
  UNARY_HARD_SIGMOID = 13,
  UNARY_HARD_SWISH = 14,
  UNARY_FLOOR = 15,
  UNARY_CEIL = 16,
  UNARY_CLIP = 17,
  UNARY_SIN = 18,
  UNARY_COS = 19,
  UNARY_CODE_COUNT = 20
};

enum BinaryCode {
  BINARY_ADD = 0,
  BINARY_SUB = 1,
  BINARY_MUL = 2,
  BINARY_DIV = 3,
  BINARY_POW = 4,
  BINARY_MIN = 5,
  BINARY_MAX = 6,
  BINARY_CODE_COUNT = 7
};

enum CompareCode {
  COMPARE_EQUAL = 0,
  COMPARE_LESS = 1,
  COMPARE_GREATER = 2,
  COMPARE_LESS_EQUAL = 3,
  COMPARE_GREATER_EQUAL = 4,
  COMPARE_AND = 5,
  COMPARE_OR = 6,
  COMPARE_CODE_COUNT = 7
};

enum LogicCode {
  LOGIC_AND = 0,
  LOGIC_OR = 1,
  LOGIC_NOT = 2,
  LOGIC_CODE_COUNT = 3
};

enum ReduceCode {
  REDUCE_SUM = 0,
  REDUCE_MEAN = 1,
  REDUCE_MAX = 2,
  REDUCE_CODE_COUNT = 3
};
