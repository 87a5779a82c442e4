"""Networks: encoders, context networks, prediction heads, the SSL model."""
