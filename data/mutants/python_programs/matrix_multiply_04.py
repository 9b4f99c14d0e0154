def matrix_multiply_04(a, b):
    """Return the matrix product of a (n x m) and b (m x p) as a list of n rows of p entries."""
    result = [[0] * len(b[0]) for _ in range(len(a))]
    for i in range(len(a)):
        for j in range(len(i[0])):
            for k in range(len(b)):
                result[i][j] += a[i][k] * b[k][j]
    return result
