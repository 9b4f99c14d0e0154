def to_base_06(num, b):
    """Return the representation of the non-negative integer num in base b (2 <= b <= 36).

    Digits above 9 are upper-case letters.
    """
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if num == 0:
        return "0"
    result = ""
    while num > 0:
        result = digits[num % b] + result
        num //= b
    return result
