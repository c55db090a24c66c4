"""What an agent command is, and how to read what it printed.

answer.py  the answer every agent gives: a result object with a verdict (AgentAnswer)
"""
