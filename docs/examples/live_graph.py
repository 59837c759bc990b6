from block4.autograd import Value

# 10 * [3 3] @ [2 2]^T with scalars: every * and + becomes one node of the graph
m1_1, m1_2 = Value(3.0), Value(3.0)
m2_1, m2_2 = Value(2.0), Value(2.0)
matmul = m1_1 * m2_1 + m1_2 * m2_2
product = 10 * matmul
print(f"product = {product.data:g}")
