def roman_numerals_07(n):
    """Return the Roman numeral for the integer 1 <= n <= 3999."""
    table = [
        (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
        (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
        (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
    ]
    result = ""
    for value, symbol in table:
        while n >= value:
            result += symbol
            n -= value
    return result
