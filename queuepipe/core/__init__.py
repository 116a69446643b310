"""TF-free core of queuepipe: where samples come from and which worker produces them.

Nothing under this package imports TensorFlow; worker processes run only this code.
"""
