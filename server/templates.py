"""Chat templates by model family, for `--model-type` when a tokenizer has none.

Jinja templates in the Hugging Face format (rendered by the tokenizer's own
`apply_chat_template`), written after each family's published prompt format.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}"
    "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] {% if loop.first %}{{ sys }}{% endif %}"
    "{{ m['content'] | trim }} [/INST]{% else %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}{% endfor %}"
)

MISTRAL = (
    "{{ bos_token }}{% set sys = '' %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set sys = m['content'] + '\n\n' %}{% elif m['role'] == 'user' %}[INST] {{ sys }}{{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)

CHATGLM3 = (
    "[gMASK]sop{% for m in messages %}<|{{ m['role'] }}|>\n {{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

BAICHUAN2 = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<reserved_106>{{ m['content'] }}{% else %}<reserved_107>{{ m['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<reserved_107>{% endif %}"
)

GEMMA = (
    "{{ bos_token }}{% set sys = '' %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set sys = m['content'] + '\n\n' %}{% else %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] == 'user' %}{{ sys }}{% set sys = '' %}{% endif %}{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

FALCON = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n{% else %}Falcon: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Falcon:{% endif %}"
)

DEEPSEEK = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n"
    "{% else %}### Response:\n{{ m['content'] }}\n<|EOT|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)

# ChatML that shows the tools to the model and writes calls and results in the hermes format
# (<tool_call>{"name": ..., "arguments": ...}</tool_call>), which --tool-call-parser hermes reads back:
# for ChatML models whose own template ignores tools (SmolLM2, older Qwen and Yi).
CHATML_TOOLS = (
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- set rest = messages[1:] -%}{%- else -%}{%- set system = '' -%}{%- set rest = messages -%}{%- endif -%}"
    "{%- if system or tools -%}{{- '<|im_start|>system\n' + system -}}"
    "{%- if tools -%}{{- ('\n\n' if system else '') + '# Tools\n\nYou may call one or more functions to assist with "
    "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>' -}}{%- endif -%}{{- '<|im_end|>\n' -}}{%- endif -%}"
    "{%- for message in rest -%}"
    "{%- if message['role'] == 'assistant' and message.get('tool_calls') -%}"
    "{{- '<|im_start|>assistant\n' + (message['content'] or '') -}}"
    "{%- for tc in message['tool_calls'] -%}{{- '<tool_call>\n{\"name\": \"' + tc['function']['name'] + "
    "'\", \"arguments\": ' + (tc['function']['arguments'] | tojson) + '}\n</tool_call>' -}}{%- endfor -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{{- '<|im_start|>user\n<tool_response>\n' + message['content'] + '\n</tool_response><|im_end|>\n' -}}"
    "{%- else -%}{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

TEMPLATES: dict[str, str] = {
    "chatml-tools": CHATML_TOOLS,
    "chatml": CHATML,
    "qwen": CHATML,
    "yi": CHATML,
    "llama3": LLAMA3,
    "llama2": LLAMA2,
    "mistral": MISTRAL,
    "chatglm": CHATGLM3,
    "baichuan": BAICHUAN2,
    "gemma": GEMMA,
    "falcon": FALCON,
    "deepseek": DEEPSEEK,
}


def family_template(model_type: str) -> str:
    """The template of a --model-type family; ValueError names the known ones."""
    key = model_type.lower()
    if key not in TEMPLATES:
        raise ValueError(f"unknown --model-type {model_type!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[key]


def load_template(given: str) -> tuple[str, str]:
    """--chat-template: a family name or a Jinja file -> (template, where it came from)."""
    if given.lower() in TEMPLATES:
        return TEMPLATES[given.lower()], f"family:{given.lower()}"
    path = Path(given).expanduser()
    if not path.is_file():
        raise ValueError(f"--chat-template {given!r}: neither a file nor a family ({', '.join(sorted(TEMPLATES))})")
    return path.read_text(encoding="utf-8"), f"file:{path.name}"
