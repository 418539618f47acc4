"""One prompt, two forms: flat text for completion models, chat messages for chat models.

A few-shot prompt is an instruction, exemplars (an input and its target) and a query. Completion
models continue the flat text; chat models answer it best as a conversation, the way
lm-evaluation-harness does with ``--apply_chat_template --fewshot_as_multiturn``: the
instruction as the system message, each exemplar as a user turn (its input) and an assistant
turn (its target), the query as the last user turn.

:class:`FewShotText` is a ``str`` (the flat text, byte for byte what ``FewShotPrompt.render``
always produced) that also carries its parts. Every caller, cache key and tokenizer that handles
prompts as strings keeps working unchanged; only the chat backends read the parts, through
:func:`chat_messages`, the one message builder of the transformers and the HTTP backends.
"""

import json


class FewShotText(str):
    """The flat few-shot prompt ``instruction, input+target, ..., query`` joined by blank lines.

    >>> p = FewShotText("Answer briefly.", [("Q: 2+2?\\nA:", " 4")], "Q: 3+3?\\nA:")
    >>> print(p)
    Answer briefly.
    <BLANKLINE>
    Q: 2+2?
    A: 4
    <BLANKLINE>
    Q: 3+3?
    A:
    >>> p.shots
    (('Q: 2+2?\\nA:', ' 4'),)
    """

    instruction: str
    shots: tuple[tuple[str, str], ...]
    query: str

    def __new__(cls, instruction: str, shots, query: str):
        shots = tuple((str(user), str(target)) for user, target in shots)
        text = "\n\n".join([instruction, *(user + target for user, target in shots), query])
        self = super().__new__(cls, text)
        self.instruction, self.shots, self.query = instruction, shots, query
        return self

    def __getnewargs__(self):  # pickling (dataloader workers) rebuilds from the parts
        return self.instruction, self.shots, self.query


def chat_messages(prompt: str, system_role: bool = True, multiturn: bool = True) -> list[dict]:
    """The chat messages for ``prompt``: multi-turn few-shot for a :class:`FewShotText`.

    Args:
        prompt: a :class:`FewShotText`, or any string (sent as one user message).
        system_role: put the instruction in a system message; ``False`` prepends it to the
            first user turn instead, for servers and chat templates that reject a system role.
        multiturn: ``False`` sends the whole flat prompt as one user message (the behaviour
            before multi-turn few-shot, kept for comparison).

    >>> p = FewShotText("Answer briefly.", [("Q: 2+2?\\nA:", " 4")], "Q: 3+3?\\nA:")
    >>> [(m["role"], m["content"]) for m in chat_messages(p)]  # doctest: +NORMALIZE_WHITESPACE
    [('system', 'Answer briefly.'), ('user', 'Q: 2+2?\\nA:'), ('assistant', '4'),
     ('user', 'Q: 3+3?\\nA:')]
    >>> chat_messages(p, system_role=False)[0]["content"]
    'Answer briefly.\\n\\nQ: 2+2?\\nA:'
    >>> chat_messages("Is it? yes or no")
    [{'role': 'user', 'content': 'Is it? yes or no'}]
    """
    if not isinstance(prompt, FewShotText) or not multiturn:
        return [{"role": "user", "content": str(prompt)}]
    turns = []
    for user, target in prompt.shots:
        turns += [("user", user), ("assistant", target.strip())]
    turns.append(("user", prompt.query))
    if prompt.instruction and system_role:
        turns.insert(0, ("system", prompt.instruction))
    elif prompt.instruction:
        turns[0] = ("user", f"{prompt.instruction}\n\n{turns[0][1]}")
    return [{"role": role, "content": content} for role, content in turns]


def canonical(messages: list[dict]) -> str:
    """The messages as one stable string: what a chat backend's cache key holds.

    >>> canonical([{"role": "user", "content": "hi"}])
    '[{"content": "hi", "role": "user"}]'
    """
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)
