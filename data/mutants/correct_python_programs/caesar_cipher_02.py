def caesar_cipher_02(s, shift):
    """Shift every ASCII letter of s by shift places in the alphabet, wrapping around.

    Case is preserved; all other characters are left unchanged. shift may be negative.
    """
    out = []
    for c in s:
        if c.isascii() and c.isalpha():
            base = ord("a") if c.islower() else ord("A")
            out.append(chr((ord(c) - base + shift) % 26 + base))
        else:
            out.append(c)
    return "".join(out)
