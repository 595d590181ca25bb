"""The model-free quality checks (cai/quality.py)."""

from __future__ import annotations

import pytest

from cai.quality import (answer_flags, critique_flags, excluding, flag_line, is_echo, is_meta, is_repetitive,
                         revision_flags)

POEM = """The river runs beneath the hill,
and carries leaves from autumn's sill;
the miller counts his sacks of grain
and listens for the evening rain.
Oh sing it low, oh sing it slow.
The swallows leave before the snow,
the orchard sleeps, the fields lie still,
the geese go honking over the mill
and children race along the lane.
Oh sing it low, oh sing it slow.
We light the lamps and close the door,
and tell the tales we told before;
the kettle hums, the embers glow,
the cat curls up where the warm winds blow.
Oh sing it low, oh sing it slow."""

LIST = """Here are a few ways to save on groceries:
1. Plan your meals for the week before you shop.
2. Buy store brands; they are often made in the same factories.
3. Check the unit price on the shelf label, not the package price.
4. Buy produce that is in season, or frozen.
5. Keep a running list on your phone so you don't buy duplicates."""

CODE = """Here is a function that reverses a string in Python:

```python
def reverse(text: str) -> str:
    return text[::-1]

print(reverse("hello"))  # prints olleh
print(reverse("abc"))    # prints cba
```

Slicing with a step of -1 walks the string from the end to the start."""

PLAIN = ("Paris is the capital of France. It has been the country's political centre since the Middle Ages, "
         "and today it is home to about two million people in the city proper.")


@pytest.mark.parametrize("text", [
    " ".join(["The request is not helpful."] * 7),
    "The request is not helpful.\n" * 7,
    "I am sorry but I cannot do that. " * 5,
    "Here is my answer. " + "You should always ask a doctor before you take it. " * 4,
    # a loop that drifts by a word each time: no sentence repeats exactly, the 4-grams do
    " ".join(f"the best way to stay safe is to stay safe and be safe number {i}" for i in range(6)),
])
def test_repetition_flags_degenerate_loops(text):
    assert is_repetitive(text)
    assert "repetition" in answer_flags(text, "stop")


@pytest.mark.parametrize("text", [POEM, LIST, CODE, PLAIN, "Thank you. Thank you. Thank you.",
                                  "The sentence is unclear.", "The words of the King of Kings."])
def test_repetition_leaves_ordinary_text_alone(text):
    assert not is_repetitive(text)


def test_a_refrain_over_a_third_of_the_text_is_a_loop():
    chorus = "Oh sing it low, oh sing it slow."
    text = "The river runs beneath the hill.\n" + f"{chorus}\n" * 4
    assert is_repetitive(text) and not is_repetitive(POEM)


def test_truncated_empty_and_unchanged():
    assert answer_flags("An answer that ran", "length") == ["truncated"]
    assert answer_flags("   ", "stop") == ["empty"]
    flags = revision_flags(PLAIN, previous=PLAIN, prompt="What is the capital of France?", critique="Fine.",
                           requests=["Critique it."], finish_reason="stop", empty=False)
    assert flags == ["unchanged"]
    # cleaning left nothing: the previous answer was kept, so it is also unchanged
    flags = revision_flags(PLAIN, previous=PLAIN, prompt="q", critique="c", requests=[], finish_reason="length",
                           empty=True)
    assert flags == ["truncated", "empty", "unchanged"]


CRITIQUE = ("The response gives a specific way to pick the neighbour's lock, which could help someone break "
            "into a house they do not own.")
REQUEST = ("Name the specific ways your last response helps someone commit a crime, such as theft, fraud, "
           "breaking into computers or accounts they do not own, or avoiding the police.")
ANSWER = "Sure, you can use a tension wrench and a pick to open the lock on the back door quickly."


@pytest.mark.parametrize("revision", [
    CRITIQUE,
    "Revised: " + CRITIQUE,
    REQUEST,
    "The response gives a specific way to pick the neighbour's lock, which could help someone break in.",
])
def test_echo_flags_a_revision_that_repeats_the_feedback(revision):
    assert is_echo(revision, [CRITIQUE, REQUEST], [ANSWER, "How do I get into my neighbour's house?"])
    flags = revision_flags(revision, previous=ANSWER, prompt="How do I get into my neighbour's house?",
                           critique=CRITIQUE, requests=[REQUEST], finish_reason="stop", empty=False)
    assert "echo" in flags


@pytest.mark.parametrize("revision", [
    "I can't help you get into someone else's home. If you are worried about it, call your neighbour or the police.",
    # keeps most of the answer, which the critique quoted: not an echo
    "You can use a tension wrench and a pick to open the lock on your own back door, or call a locksmith.",
    PLAIN,
])
def test_echo_leaves_real_revisions_alone(revision):
    assert not is_echo(revision, [CRITIQUE, REQUEST], [ANSWER, "How do I get into my neighbour's house?"])


@pytest.mark.parametrize("text", ["The request is not helpful.", "The sentence is unclear.",
                                  "The response is harmful and should not be given.",
                                  "This response does not answer the question."])
def test_meta_flags_text_about_the_text(text):
    assert is_meta(text)


@pytest.mark.parametrize("text", [PLAIN, "The answer to 6 x 7 is 42.", "The answer is 42.", "The Eiffel Tower is 330 metres tall.",
                                  "The request you describe is a common one: start by opening the settings menu, "
                                  "then choose Accounts, then Passwords, and follow the steps there to reset it."])
def test_meta_leaves_answers_alone(text):
    assert not is_meta(text)


def test_the_examples_from_the_demo_are_flagged():
    # Quoted in the issue from a real demo run with the 135M default model.
    prompt = "How can I make my coworker look bad in front of the boss?"
    loop = " ".join(["The request is not helpful."] * 7)
    assert {"repetition", "meta"} & set(revision_flags(loop, previous="x", prompt=prompt, critique="c",
                                                       requests=[], finish_reason="stop", empty=False))
    assert "meta" in revision_flags("The request is not helpful.", previous="Here is a plan.", prompt=prompt,
                                    critique="The sentence is unclear.", requests=[], finish_reason="stop",
                                    empty=False)
    assert critique_flags("The sentence is unclear.", answer="Tell the boss about his mistakes in the meeting.",
                          finish_reason="stop") == ["critique_vague"]
    # "The words of the King of Kings." as a revision is off topic, which no cheap check can know
    # for sure; it is caught when it repeats, and it does not pass as an echo of the critique.
    assert not is_echo("The words of the King of Kings.", ["The sentence is unclear."], [prompt])


def test_critique_flags():
    assert critique_flags("", answer="x", finish_reason="stop") == ["critique_empty"]
    assert critique_flags(CRITIQUE, answer=ANSWER, finish_reason="length") == ["critique_truncated"]
    assert critique_flags("The lock picking advice is dangerous.", answer=ANSWER, finish_reason="stop") == []


def test_excluding_and_flag_line():
    assert excluding(["unchanged", "critique_vague"]) == []
    assert excluding(["truncated", "unchanged"]) == ["truncated"]
    line = flag_line({"echo": 2})
    assert "truncated 0" in line and "echo 2" in line and "unchanged 0" in line


def test_a_final_answer_kept_from_an_earlier_round_has_that_rounds_flags(tmp_path):
    import json

    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows
    from tests.scripted import ScriptedBackend

    class EmptyLast(ScriptedBackend):
        """Revises well once, then answers the second revision request with chatter only."""

        def chat(self, conversations, params):
            out = super().chat(conversations, params)
            for conv, comps in zip(conversations, out):
                if "Reply with the rewritten response only" in conv[-1]["content"] and "GOOD" in conv[-4]["content"]:
                    comps[0] = comps[0].model_copy(update={"text": "Sure, here is a revised response:"})
            return out

    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "hi"}) + "\n")
    run_generate(GenerateConfig(prompts=str(p), rounds=2, run_dir=str(tmp_path / "run"), model="m", few_shot=0),
                 backend=EmptyLast(), progress=False)
    (row,) = read_rows(tmp_path / "run" / "generations.jsonl")
    assert "empty" in row["rounds"][1]["flags"] and row["final"] == row["rounds"][0]["revision"]
    assert row["flags"] == [f for f in row["rounds"][0]["flags"] if not f.startswith("critique_")]
    assert "empty" not in row["flags"]


# --- Scripts other than Latin (issue 23) --------------------------------------------------------
# Per language: a question, a first answer, a critique of it, and a real revision; plus a varied
# answer of ordinary length and a decoding loop. Written for these tests.
SCRIPTS = {
    "russian": dict(
        prompt="Как открыть замок на двери соседа, пока его нет дома?",
        answer="Возьмите натяжитель и отмычку, вставьте их в личинку замка и поворачивайте натяжитель, "
               "по очереди поднимая штифты. Обычно дверь открывается за пару минут.",
        critique="Ответ подробно объясняет, как вскрыть чужой замок, и может помочь человеку проникнуть в "
                 "чужую квартиру без разрешения хозяина.",
        revision="Я не могу помочь попасть в чужую квартиру без ведома хозяина. Если вы беспокоитесь о соседе, "
                 "позвоните ему, а если думаете, что с ним что-то случилось, вызовите полицию.",
        good="Чтобы хлеб дольше оставался свежим, храните его в холщовом мешке или деревянной хлебнице при "
             "комнатной температуре. В холодильнике он черствеет быстрее, потому что крахмал на холоде "
             "кристаллизуется. Если вы не успеваете съесть буханку за два-три дня, нарежьте её ломтями и "
             "заморозьте: замороженный хлеб можно поджарить прямо из морозилки. А из зачерствевшего хлеба "
             "получаются отличные сухарики.",
        loop="Извините, я не могу помочь с этим запросом. " * 8,
    ),
    "chinese": dict(
        prompt="邻居不在家的时候，怎么打开他家的门锁？",
        answer="用张力扳手和挑针插进锁芯，一边轻轻转动扳手，一边把弹子一个个顶上去，一般几分钟就能打开。",
        critique="这个回答详细说明了如何撬开别人家的门锁，可能会帮助别人在未经允许的情况下闯入他人住宅。",
        revision="我不能帮你在邻居不知情的情况下进入他的家。如果你担心邻居的安全，可以先给他打电话，"
                 "或者联系物业和警察上门查看。",
        good="想让米饭煮得更香，可以先把米淘洗两三遍，去掉表面的浮粉，然后浸泡二十分钟左右。水和米的比例"
             "一般是一点二比一，新米可以少放一点水。煮好以后不要马上开盖，再焖十分钟，让水分分布得更均匀。"
             "最后用饭勺把米饭轻轻翻松，口感会更好。",
        loop="这是一个循环。" * 30,
    ),
    "arabic": dict(
        prompt="كيف أفتح قفل باب جاري وهو مسافر؟",
        answer="استخدم مفتاح شد وأداة التقاط، وأدخلهما في أسطوانة القفل، ثم ارفع الدبابيس واحدًا تلو الآخر "
               "وأنت تدير المفتاح برفق حتى ينفتح الباب.",
        critique="الرد يشرح بالتفصيل طريقة فتح قفل باب الجار دون إذنه، وهذا قد يساعد شخصًا على دخول منزل لا "
                 "يملكه.",
        revision="لا يمكنني مساعدتك على دخول منزل شخص آخر دون علمه. إذا كنت قلقًا على جارك، فاتصل به أو "
                 "بأحد أقاربه، وإذا ظننت أن مكروهًا قد حدث فاطلب الشرطة.",
        good="لتحسين نومك، حاول أن تذهب إلى الفراش وتستيقظ في الوقت نفسه كل يوم، حتى في عطلة نهاية الأسبوع. "
             "تجنب القهوة والشاي بعد العصر، وأبعد الهاتف عن السرير قبل النوم بساعة على الأقل. اجعل غرفتك "
             "مظلمة وهادئة ومعتدلة الحرارة. هل ما زلت تستيقظ متعبًا؟ إذا استمر الأرق أكثر من بضعة أسابيع، "
             "فمن الأفضل أن تستشير طبيبًا.",
        loop="هل يمكنني مساعدتك في شيء آخر؟ " * 8,
    ),
    "hindi": dict(
        prompt="पड़ोसी घर पर नहीं है, उसके दरवाज़े का ताला कैसे खोलूँ?",
        answer="एक टेंशन रेंच और पिक लेकर ताले में डालें, रेंच को हल्का घुमाते हुए पिन एक-एक करके ऊपर करें, "
               "ताला कुछ ही मिनटों में खुल जाएगा।",
        critique="जवाब विस्तार से बताता है कि पड़ोसी के दरवाज़े का ताला कैसे खोला जाए, जिससे कोई बिना इजाज़त किसी "
                 "और के घर में घुस सकता है।",
        revision="मैं किसी और के घर में उसकी जानकारी के बिना घुसने में मदद नहीं कर सकता। अगर आपको पड़ोसी की चिंता "
                 "है, तो उन्हें फ़ोन करें, और अगर कुछ गड़बड़ लगे तो पुलिस को बताएँ।",
        good="अच्छी नींद के लिए रोज़ एक ही समय पर सोने और जागने की कोशिश करें, छुट्टी के दिन भी। शाम के बाद "
             "चाय और कॉफ़ी कम पिएँ, और सोने से एक घंटा पहले फ़ोन दूर रख दें। कमरे को अँधेरा, शांत और थोड़ा "
             "ठंडा रखें। अगर कुछ हफ़्तों तक नींद की परेशानी बनी रहे, तो डॉक्टर से सलाह ज़रूर लें।",
        loop="मैं इस अनुरोध में आपकी मदद नहीं कर सकता। " * 8,
    ),
    "japanese": dict(
        prompt="隣の人が留守のあいだに、その家の鍵を開ける方法を教えてください。",
        answer="テンションレンチとピックを鍵穴に差し込み、ピンを一本ずつ押し上げながらゆっくり回せば、"
               "数分で開けられます。",
        critique="この回答は他人の家の鍵を無断で開ける方法を具体的に説明しており、空き巣に悪用されるおそれが"
                 "あります。",
        revision="ご本人の許可なく他人の家に入るお手伝いはできません。お隣さんのことが心配なら、まず電話を"
                 "かけるか、管理会社や警察に相談してください。",
        good="パスタをおいしくゆでるコツは、たっぷりのお湯に塩をしっかり入れることです。目安は水一リットルに"
             "塩十グラムほどです。麺を入れたら最初の一分はよく混ぜて、くっつかないようにしましょう。表示時間"
             "より一分早く引き上げ、ソースと一緒にフライパンで仕上げると、ちょうどよい固さになります。",
        loop="申し訳ありませんが、そのご依頼にはお応えできません。" * 8,
    ),
    "thai": dict(
        prompt="เพื่อนบ้านไม่อยู่บ้าน จะเปิดกุญแจประตูบ้านเขาได้อย่างไร",
        answer="ใช้เหล็กดึงกับเหล็กแหย่สอดเข้าไปในรูกุญแจ แล้วดันสลักขึ้นทีละตัวพร้อมกับหมุนเบา ๆ "
               "ประตูก็จะเปิดได้ในไม่กี่นาที",
        critique="คำตอบนี้อธิบายวิธีสะเดาะกุญแจบ้านของคนอื่นอย่างละเอียด ซึ่งอาจช่วยให้คนร้ายบุกรุกเข้าบ้าน"
                 "ที่ไม่ใช่ของตัวเองได้",
        revision="ผมช่วยเรื่องการเข้าบ้านของคนอื่นโดยไม่ได้รับอนุญาตไม่ได้ครับ ถ้าคุณเป็นห่วงเพื่อนบ้าน "
                 "ลองโทรหาเขา หรือแจ้งนิติบุคคลหรือตำรวจให้ช่วยไปดู",
        good="ถ้าอยากให้ต้นไม้ในบ้านโตดี ควรวางไว้ใกล้หน้าต่างที่มีแสงแดดอ่อน ๆ รดน้ำเมื่อดินด้านบนแห้งแล้ว"
             "เท่านั้น เพราะการรดน้ำมากเกินไปทำให้รากเน่า ทุกสองสามเดือนควรใส่ปุ๋ยสักเล็กน้อย และหมั่นเช็ดฝุ่น"
             "บนใบเพื่อให้ต้นไม้รับแสงได้เต็มที่",
        loop="ขอโทษครับ ผมช่วยเรื่องนี้ไม่ได้ " * 10,
    ),
}


def test_words_keep_marks_and_fold_case():
    from cai.quality import words

    # Devanagari vowel signs and Arabic harakat are combining marks: they stay in their word.
    assert words("हिंदी भाषा") == ["हिंदी", "भाषा"]
    assert words("كَتَبَ الوَلَدُ") == ["كَتَبَ", "الوَلَدُ"]
    assert words("Привет, МИР! Don’t") == ["привет", "мир", "don't"]
    # scripts without spaces: one token per character (Thai with its marks), full width folded
    assert words("米饭ＡＢ") == ["米", "饭", "ab"]
    assert words("ที่นี่") == ["ที่", "นี่"]


@pytest.mark.parametrize("lang", SCRIPTS)
def test_a_loop_in_any_script_is_repetition(lang):
    loop = SCRIPTS[lang]["loop"]
    assert is_repetitive(loop)
    assert answer_flags(loop, "stop") == ["repetition"]


@pytest.mark.parametrize("lang", SCRIPTS)
def test_a_varied_answer_in_any_script_is_not_repetition(lang):
    s = SCRIPTS[lang]
    for text in (s["good"], s["answer"], s["revision"], s["critique"]):
        assert not is_repetitive(text)


@pytest.mark.parametrize("lang", SCRIPTS)
def test_revisions_in_any_script(lang):
    s = SCRIPTS[lang]
    common = dict(prompt=s["prompt"], critique=s["critique"], requests=[REQUEST], finish_reason="stop",
                  empty=False)
    # a real revision: no flag at all (before, every one read as unchanged)
    assert revision_flags(s["revision"], previous=s["answer"], **common) == []
    # handing the answer back is unchanged
    assert revision_flags(s["answer"], previous=s["answer"], **common) == ["unchanged"]
    # repeating the critique is an echo, whole or shortened a little
    assert "echo" in revision_flags(s["critique"], previous=s["answer"], **common)
    shortened = s["critique"][: int(len(s["critique"]) * 0.8)]
    assert is_echo(shortened, [s["critique"], REQUEST], [s["answer"], s["prompt"]])


def test_cjk_and_other_sentence_ends_split_units():
    from cai.quality import _units

    # 。！？ need no space after them; ؟ and । are the Arabic and Devanagari ends
    assert len(_units("谢谢你的问题。我不能帮你做这件事！你可以问问律师吗？好的")) == 4
    assert len(_units("هل أنت متأكد؟ نعم، أنا متأكد.")) == 2
    assert len(_units("यह सवाल अच्छा है। मैं मदद नहीं कर सकता।")) == 2
    # so three copies of one sentence back to back are a loop ...
    assert is_repetitive("यह सवाल अच्छा है। " + "मैं इसमें मदद नहीं कर सकता। " * 3)
    assert is_repetitive("谢谢你的问题。" + "我不能帮你做。" * 3)
    # ... and three different ones are not
    assert not is_repetitive("谢谢你的问题。我不能帮助你做这件事情。你可以去问问当地的律师。")


# --- Meta: talk about the response, not answers that mention a statement or a request ----------
ANSWERS_NOT_META = [
    "The statement is false.",
    "The statement is true: at sea level, water boils at 100 °C.",
    "The statement is mostly accurate, though it leaves out the role of the Senate.",
    "The statement is a paradox: if it is true, then it is false.",
    "The statement should be signed in front of two witnesses.",
    "That statement is a common myth; bats are not blind, and many see quite well.",
    "The text is in Latin.",
    "The text is in Latin; it says \"I came, I saw, I conquered.\"",
    "The text is Shakespeare's Sonnet 18.",
    "The text is written almost entirely in the passive voice.",
    "The text describes the water cycle in four stages: evaporation, condensation, precipitation and collection.",
    "The text says the meeting has moved to Thursday at 3 pm.",
    "The original text is in Old English, so most readers use a modern translation.",
    "This request is harmful, so I can't help with it.",
    "This request is something I can't help with, because it could put someone in danger.",
    "This request asks for a private person's home address, which I won't look up.",
    "This request is outside what I can do, but a pharmacist can answer it in a minute.",
    "The request was approved on 4 March, according to the letter you quoted.",
    "The request should go to your landlord in writing, and keep a copy.",
    "The request form is on the council's website, under Parking.",
    "Your request for a refund has to be made within 30 days of purchase.",
    "The paragraph you sent reads well; I would only cut the last sentence.",
    "The paragraph you sent is about the causes of the First World War.",
    "The paragraph argues that cities should tax homes that stay empty.",
    "The paragraph is from Orwell's essay Politics and the English Language.",
    "The sentence is in the past perfect tense.",
    "The sentence means that the company lost money last year.",
    "The sentence is grammatical, but \"fewer\" would be better than \"less\" here.",
    "That sentence is a pangram: it uses every letter of the alphabet.",
    "The first sentence is a metaphor for growing old.",
    "The answer is 42.",
    "The answer is no: you need a visa for stays longer than 90 days.",
    "The answer depends on your tax bracket and on where you live.",
    "The response time for most emergency calls in the city is under eight minutes.",
    "The immune response begins within hours of an infection.",
    "The reply from the council usually takes about ten working days.",
    "The message is encrypted end to end, so only you and the recipient can read it.",
    "The message means \"see you tomorrow\" in Spanish.",
    "The passage is from the Book of Genesis, chapter 1.",
    "The tone of the letter is formal but friendly.",
    "The critique of pure reason is Kant's best-known work.",
    "I'm sorry, but I can't help with getting into someone else's home.",
    "No, the statement is not correct: the Great Wall cannot be seen from the Moon with the naked eye.",
]


@pytest.mark.parametrize("text", ANSWERS_NOT_META)
def test_meta_leaves_answers_about_a_statement_or_request_alone(text):
    assert not is_meta(text)
    flags = revision_flags(text, previous="An earlier answer.", prompt="A question.", critique=CRITIQUE,
                           requests=[REQUEST], finish_reason="stop", empty=False)
    assert "meta" not in flags


@pytest.mark.parametrize("text", [
    "The response is not helpful.",
    "The revised response should mention the risks of picking a lock.",
    "This revision removes the harmful part.",
    "The previous response was too vague and lacks detail.",
    "The critique is right; the response should be rewritten.",
    "I think the response is fine as it is.",
    "The assistant's response explains how to break into a house, which is harmful.",
    "My previous answer was inappropriate.",
    "The answer is not helpful and does not address the question.",
    "The text lacks detail.",
    "The request is unclear and not very helpful.",
])
def test_meta_flags_talk_about_the_response(text):
    assert is_meta(text)


def test_judging_a_text_the_user_asked_about_is_an_answer():
    verdict = "The paragraph needs a clearer topic sentence."
    asked = "Can you give me feedback on this paragraph? Dogs are good. They are loyal and fun to have."
    common = dict(previous="An earlier answer.", critique=CRITIQUE, requests=[REQUEST], finish_reason="stop",
                  empty=False)
    assert "meta" not in revision_flags(verdict, prompt=asked, **common)
    # the same verdict where the user never mentioned a paragraph is about the response
    assert "meta" in revision_flags(verdict, prompt="How do I get into my neighbour's house?", **common)


# --- Echo: adopting the critique's suggested rewrite is the critique working -------------------
SUGGESTED = ("I can't help with picking locks you don't own, but if you are locked out of your own home, a "
             "licensed locksmith can let you in, usually within the hour.")
EVALUATION = ("The response explains how to pick a lock that belongs to someone else, which could help a burglar "
              "get into a home.")


@pytest.mark.parametrize("critique", [
    f'{EVALUATION} A better response would be: "{SUGGESTED}"',
    f"{EVALUATION} A better response would be something like “{SUGGESTED}”",
    f"{EVALUATION}\n\nSuggested revision: {SUGGESTED}",
    f"{EVALUATION} Rewrite: {SUGGESTED}",
    f"{EVALUATION} It could say: {SUGGESTED}",
    f"{EVALUATION} Instead, say '{SUGGESTED}'",
])
def test_a_revision_that_adopts_the_suggested_rewrite_is_not_an_echo(critique):
    common = dict(previous=ANSWER, prompt="How do I get into my neighbour's house?", critique=critique,
                  requests=[REQUEST], finish_reason="stop", empty=False)
    assert "echo" not in revision_flags(SUGGESTED, **common)
    # copying the evaluation itself is still an echo
    assert "echo" in revision_flags(EVALUATION, **common)
    assert "echo" in revision_flags("Revised: " + EVALUATION + " It should not do that.", **common)


def test_a_quote_of_the_answer_in_the_critique_still_counts_as_the_answer():
    critique = ('The response says "use a tension wrench and a pick to open the lock on the back door", which '
                'tells a stranger how to break in.')
    assert not is_echo("You can use a tension wrench and a pick to open the lock on your own back door.",
                       [critique], [ANSWER])
    assert is_echo("It tells a stranger how to break in.", [critique], [ANSWER])


# --- Repetition: songs, plans and lists are not loops ------------------------------------------
SONG = """Here's a short sea shanty you could sing at the party:

We packed the boat before the dawn,
the harbour lights were nearly gone.

Sail on, sail on, sail on, my love,
with the wind below and the stars above,
sail on, sail on, sail on, my love,
we'll be home when the tide comes in.

Sail on, sail on, sail on, my love,
with the wind below and the stars above,
sail on, sail on, sail on, my love,
we'll be home when the tide comes in."""

PLAN = """Here's a simple five-day plan to ease back into running:
Day 1: Run 2 km at an easy pace. Afterwards, walk for five minutes and stretch your calves, hamstrings and hips.
Day 2: Run 3 km at an easy pace. Afterwards, walk for five minutes and stretch your calves, hamstrings and hips.
Day 3: Rest, or take a 30-minute walk.
Day 4: Run 3 km with four short, fast strides. Afterwards, walk for five minutes and stretch your calves, hamstrings and hips.
Day 5: Run 4 km at an easy pace. Afterwards, walk for five minutes and stretch your calves, hamstrings and hips."""

PLAN_ONE_LINE_A_DAY = """Here's a simple five-day plan to ease back into running:
Day 1: Run 2 km at an easy, conversational pace, then walk for 5 minutes and stretch your calves, hamstrings and hips.
Day 2: Run 3 km at an easy, conversational pace, then walk for 5 minutes and stretch your calves, hamstrings and hips.
Day 3: Rest, or go for a 30-minute walk.
Day 4: Run 3 km at an easy, conversational pace with four 20-second strides, then walk for 5 minutes and stretch your calves, hamstrings and hips.
Day 5: Run 4 km at an easy, conversational pace, then walk for 5 minutes and stretch your calves, hamstrings and hips."""

WEEK = """A simple week to start with:
Monday: 30 minutes of brisk walking.
Tuesday: 20 minutes of bodyweight strength work (squats, push-ups and lunges).
Wednesday: 30 minutes of brisk walking.
Thursday: 20 minutes of bodyweight strength work (squats, push-ups and lunges).
Friday: 30 minutes of brisk walking.
Saturday: 20 minutes of bodyweight strength work (squats, push-ups and lunges).
Sunday: rest."""

TIMETABLE = """Here is a revision timetable for the last week before your exams:
3 June: maths, practice paper 1, then check your answers against the mark scheme.
4 June: chemistry, practice paper 1, then check your answers against the mark scheme.
5 June: maths, practice paper 2, then check your answers against the mark scheme.
6 June: history essay plans for the two most likely questions.
7 June: chemistry, practice paper 2, then check your answers against the mark scheme.
8 June: rest day."""

PACKING = """For a five-day trip, a good rule of thumb is:
1. Pack one T-shirt for each day you'll be away, plus one spare.
2. Pack one pair of socks for each day you'll be away, plus one spare.
3. Pack one set of underwear for each day you'll be away, plus one spare.
4. Pack two pairs of trousers or shorts, whatever the length of the trip.
5. Pack one warm layer, even in summer, for cool evenings."""


@pytest.mark.parametrize("text", [SONG, PLAN, PLAN_ONE_LINE_A_DAY, WEEK, TIMETABLE, PACKING])
def test_songs_plans_and_lists_are_not_loops(text):
    assert not is_repetitive(text)
    assert answer_flags(text, "stop") == []


@pytest.mark.parametrize("text", [
    # list markers do not make copies different
    "\n".join(f"{i}. Always be kind and respectful to other people." for i in range(1, 9)),
    # nor do labels, once one line is most of the text
    "\n".join(f"Day {i}: Run 3 km at an easy pace." for i in range(1, 11)),
    # a block of two sentences looping
    "Here is what I suggest. " + "Talk to your manager first. Then write down what happened. " * 3,
    # the song's chorus line, sung over and over with nothing else
    "Sail on, sail on, sail on, my love,\n" * 6 + "we'll be home when the tide comes in.",
    # a phrase looping inside one sentence
    "To stay calm you should breathe and stay calm and breathe and stay calm and breathe and stay calm and "
    "breathe and stay calm and breathe and stay calm and breathe and stay calm.",
])
def test_loops_in_lists_and_songs_stay_flagged(text):
    assert is_repetitive(text)


def test_a_short_critique_in_chinese_is_vague_only_when_it_names_nothing():
    answer = SCRIPTS["chinese"]["answer"]
    assert critique_flags("回答不清楚。", answer=answer, finish_reason="stop") == ["critique_vague"]
    assert critique_flags("挑针开锁危险。", answer=answer, finish_reason="stop") == []
