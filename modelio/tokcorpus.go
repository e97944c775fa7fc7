package modelio

// tokCorpus is the built-in English text the synthetic presets' byte-level
// BPE tokenizer learns its merges from. It is part of the tokenizer's
// definition: changing it changes every merge and token id after the 256
// byte tokens. Written for this project.
const tokCorpus = `The morning was cold and clear, and the river ran fast under the old stone bridge.
A small boat waited by the shore while two children counted the birds that flew over the water.
"There are seven," said the girl. "No, there are eight," said her brother, pointing at a grey one in the reeds.
They argued about it for a while, then laughed, because it did not matter very much.

Every model begins as a long list of numbers. Some numbers are large, most are small, and a few are strange.
When we quantize a model, we replace each number with a shorter code and remember how to turn the code back
into a value that is close to the original. The closer the value, the better the model keeps its quality.
A good quantizer is fast, careful with outliers, and honest about the error it adds.

Diffusion models learn to remove noise. At the start of generation the input is pure noise; at each step the
model predicts what the clean signal should look like and moves a little towards it. Text diffusion works the
same way with masked tokens: the model fills in the masks it is most sure about, then looks again at the rest.
Image models do the same with pixels or latent patches, and audio models with short frames of sound.

She opened the window and the smell of bread came in from the bakery across the street.
The baker had been working since four o'clock, as he did every day except Sunday.
He said that good bread needs time, warm hands, and flour that is not too fine.
People waited in a line that reached the corner, talking about the weather and the price of coffee.

Numbers in a computer are stored as bits. A thirty-two bit float has a sign, an exponent and a fraction.
A sixteen bit float keeps fewer bits of the fraction, and brain float keeps the exponent but drops more of the
fraction. Four bit codes keep only sixteen levels, so each group of weights needs its own scale and offset.
Two bit codes keep four levels; they work only when the groups are small and the scales are chosen well.

The train left the station at nine minutes past ten. It was late again, and nobody was surprised.
Through the window the fields were green and yellow, and the hills in the distance were blue with rain.
A man in a brown coat read a newspaper; a woman next to him wrote in a notebook with a pencil.
When the conductor came by, she asked how long the journey would take. "About three hours," he said.

What makes a tokenizer useful? It should split common words into few pieces and rare words into many.
Byte level tokenizers never fail: any text, in any language, becomes a sequence of bytes first.
Merges then join frequent pairs of pieces into longer pieces, one rule at a time, in the order they were learned.
The first merges join letters that often stand together, like t and h, or i and n, or a space and a letter.

In the garden the tomatoes were ripe and the beans had climbed to the top of their poles.
The old gardener walked slowly between the rows, checking the leaves for insects and the soil for water.
He kept notes in a small book: when he planted, when it rained, when the first flowers opened.
Over the years the book had become a history of the garden, and of the village around it.

Testing is how we know that the code does what we think it does. A test that only runs the code is not enough;
it must check the values, the errors and the edge cases. If a file is truncated, the program should say which
file and where. If a number is out of range, it should say which number. Clear errors save hours of work.
Small tests run often; large tests run before a release, on the real layout, with the real sizes.

The library was quiet except for the sound of pages turning. Tall shelves held books about history, science,
music and travel. A student searched for a book on the stars; another copied a map of an ancient city.
The librarian knew where every book belonged, and she could find a lost one in less than a minute.
At five o'clock she rang a small bell, and the readers slowly packed their bags and went home.

Memory matters on small devices. A phone or a small board has only a few gigabytes, and the model must share
them with everything else. Streaming the weights in chunks keeps the peak low: read a piece, quantize it,
write it, and forget it. The same idea works for export: each tensor is converted and written in turn,
so the whole model never has to sit in memory at once.

On the mountain the wind was strong and the air was thin. The climbers moved slowly, one step and then another,
resting when they needed to and drinking water often. Near the top they saw the clouds below them, white and
still like a frozen sea. They stayed for a few minutes, took pictures, and began the long walk down.

Questions are welcome: what is the best group size, how many bits are enough, and which layers are sensitive?
The answers depend on the model and the task. Attention layers are often more sensitive than feed forward ones,
the first and last layers matter more than the middle, and embeddings can usually keep more bits.
We measure, compare, and write down what we find, so the next person does not have to guess.

It rained all afternoon. The streets shone under the lamps, and the cars moved slowly through the water.
In the cafe a musician played the piano, softly at first and then louder, while the customers listened.
When he finished, they clapped, and he smiled and began another song, one that everybody seemed to know.
Outside, the rain stopped, the clouds opened, and a few stars appeared above the roofs of the town.
`
