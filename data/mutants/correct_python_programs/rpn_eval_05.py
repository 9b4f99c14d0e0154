def rpn_eval_05(tokens):
    """Evaluate a reverse Polish notation expression.

    tokens holds integers and the operator strings "+", "-", "*" and "/"; "/" divides and
    truncates toward zero. Return the integer result.
    """
    ops = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: int(a / b),
    }
    stack = []
    for token in tokens:
        if token in ops:
            b = stack.pop()
            a = stack.pop()
            stack.append(ops[token](a, b))
        else:
            stack.append(token)
    return stack.pop()
