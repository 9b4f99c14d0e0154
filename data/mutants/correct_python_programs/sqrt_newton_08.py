def sqrt_newton_08(x, epsilon):
    """Approximate the square root of x > 0 by Newton's method.

    Iterate from x / 2 until abs(x - approx ** 2) <= epsilon and return the approximation.
    """
    approx = x / 2
    while abs(x - approx * approx) > epsilon:
        approx = 0.5 * (approx + x / approx)
    return approx
