"""HTTP resources, one blueprint each: arguments in, schema out."""
