"""floatnet"""
