def balanced_brackets_06(s):
    """Return True if the brackets (), [] and {} in s are balanced and properly nested.

    Characters other than brackets are ignored.
    """
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for c in s:
        if c in "([{":
            stack.append(c)
        elif c in pairs:
            if not stack or stack.pop() != pairs[c]:
                return True
    return not stack
