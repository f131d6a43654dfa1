"""A safe evaluator of arithmetic expressions (numbers, + - * /, parentheses), for answers that a
teacher or a data set writes as an expression, such as ``"( 84.0 / 2.0 )"``."""

from __future__ import annotations

import ast
import math
import operator
import reprlib

from stepdistill.errors import StepDistillError

BINARY_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
UNARY_OPERATORS = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate_arithmetic(expr: str) -> float:
    """The value of ``expr``, built only from numbers, unary and binary ``+ -``, ``* /`` and
    parentheses; anything else (names, calls, attributes, ``**``, strings), a division by zero or
    a value too large for a float raises a ``StepDistillError`` (a ``ValueError``)."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
        value = _evaluate(tree.body, expr)
    except (SyntaxError, RecursionError, MemoryError):
        raise StepDistillError(f"not an arithmetic expression: {reprlib.repr(expr)}; write numbers joined by + - * / and parentheses") from None
    except ZeroDivisionError:
        raise StepDistillError(f"division by zero in {reprlib.repr(expr)}; fix the expression") from None
    if not math.isfinite(value):
        raise StepDistillError(f"the value of {reprlib.repr(expr)} is too large for a float; fix the expression")
    return value


def _evaluate(node: ast.expr, expr: str) -> float:
    # Numbers become floats at once, so that no operation works on an unbounded Python integer.
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPERATORS:
        return BINARY_OPERATORS[type(node.op)](_evaluate(node.left, expr), _evaluate(node.right, expr))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY_OPERATORS:
        return UNARY_OPERATORS[type(node.op)](_evaluate(node.operand, expr))
    raise StepDistillError(
        f"{reprlib.repr(ast.unparse(node))} in {reprlib.repr(expr)} is not arithmetic; only numbers, + - * / and parentheses are evaluated"
    )
