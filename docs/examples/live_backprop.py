from block4.autograd import Value

x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
q = x + y
f = q * z
f.backward()
print(f"f = {f.data:g}")
print(f"df/dx = {x.grad:g}, df/dy = {y.grad:g}, df/dz = {z.grad:g}")
